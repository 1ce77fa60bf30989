"""The controller process on the login node: the loop and its collaborators, the only writers of a run."""
