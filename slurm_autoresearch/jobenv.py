"""The environment a job may see: an allowlist, never the controller's secrets, and git without hooks."""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import threading
from collections.abc import Iterable, Iterator, Mapping

# Variables a training job needs from the node or the login shell: paths, locale, the scheduler's
# and the accelerators' own settings, thread counts, module systems and proxies. Anything else
# (above all an API key) reaches a job only when the task names it in [task] pass_env or env.
ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TERM",
    "HOSTNAME",
    "SLURM_*",
    "SLURMD_*",
    "SRUN_*",
    "SBATCH_*",
    "PMI_*",
    "PMIX_*",
    "OMPI_*",
    "CUDA_*",
    "NVIDIA_*",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "NCCL_*",
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "MODULEPATH",
    "MODULESHOME",
    "LOADEDMODULES",
    "_LMFILES_",
    # Lmod and Environment Modules: `module load` in [slurm] setup needs the exported function
    # and the module tables of the shell that submitted.
    "BASH_FUNC_module*",
    "BASH_FUNC_ml*",
    "LMOD_*",
    "__LMOD_*",
    "_ModuleTable*",
    "MODULES_*",
    "MANPATH",
    "CPATH",
    "LIBRARY_PATH",
    "PKG_CONFIG_PATH",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "HF_HOME",
    "HF_DATASETS_CACHE",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "WANDB_*",
)
# Never passed on by the allowlist, whatever pattern above matches (WANDB_API_KEY, SLURM_*_TOKEN).
SECRET = (
    "ANTHROPIC_*",
    "*_API_KEY",
    "*API_KEY*",
    "*_TOKEN",
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*CREDENTIAL*",
    "*_KEY",
)

# git runs commands a repository's config or hooks name (hooks, fsmonitor, pagers, credential
# helpers, signing); trial code may have written that config, so ara's git runs none. External
# diff drivers and textconv filters are turned off per call (`--no-ext-diff --no-textconv`).
_GIT_OVERRIDES = {
    "core.hooksPath": "/dev/null",
    "core.fsmonitor": "false",
    "core.pager": "cat",
    "core.editor": "true",
    "core.sshCommand": "false",
    "core.askPass": "",
    "credential.helper": "",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "gc.auto": "0",
    "maintenance.auto": "false",
    "protocol.ext.allow": "never",
    "uploadpack.packObjectsHook": "",
}


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in SECRET)


def _allowed(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOW) and not is_secret(name)


def job_environ(
    base: Mapping[str, str], pass_env: Iterable[str] = (), extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allowlisted part of `base`, plus the names the task passes on purpose and its own values;
    the planner's own key (ANTHROPIC_*) never, even on purpose."""
    env = {k: v for k, v in base.items() if _allowed(k)}
    env.update({k: base[k] for k in pass_env if k in base})
    env.update(extra or {})
    return {k: v for k, v in env.items() if not k.upper().startswith("ANTHROPIC_")}


_SEEN: set[str] = set()  # secrets once seen in os.environ stay known while it is swapped


def secret_values(base: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named variables long enough to be worth looking for (scrubbing, tests)."""
    found = {v for k, v in (os.environ if base is None else base).items() if is_secret(k) and len(v) >= 8}
    if base is None:
        _SEEN.update(found)
        found |= _SEEN
    return sorted(found, key=len, reverse=True)


def git_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables for every git command ara runs: no hook or configured command runs, and secrets
    are blanked (GitPython can only add variables to its children, not remove them)."""
    source = os.environ if base is None else base
    env = {k: "" for k in source if is_secret(k)}
    count = int(source.get("GIT_CONFIG_COUNT", "0") or 0)
    for i, (key, value) in enumerate(_GIT_OVERRIDES.items(), start=count):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env["GIT_CONFIG_COUNT"] = str(count + len(_GIT_OVERRIDES))
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def hide_own_environ() -> bool:
    """Make this process non-dumpable: its /proc/<pid>/environ (which still holds the key it was
    started with, whatever os.environ says now) becomes unreadable to other processes of the same
    user, and it cannot be ptraced by them. Children start dumpable again (the flag resets at exec)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        return False


_SWAP = threading.Lock()


@contextlib.contextmanager
def exported(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ is exactly `env` inside: for tools such as submitit's sbatch call that take the
    process environment and have no parameter for another (sbatch exports it into the job)."""
    with _SWAP:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
