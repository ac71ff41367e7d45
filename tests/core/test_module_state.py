"""Module-level mutable state in core/ and integrations/ is only the documented process-wide kind.

Issue 12 counted 37 module globals holding state; what may stay is state that is process-wide by
nature, one place each, with a comment saying so.  This test lists every module-level name
bound to a mutable container or ``None`` (lower-case: constants are UPPER_CASE) and compares
with the allow-list below; a new one fails until it is documented here and at its definition.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "primus_lens_wandb_exporter"
_CONTAINERS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "deque", "WeakSet", "WeakKeyDictionary",
          "WeakValueDictionary", "Lock", "RLock", "local"}

# (module, name): why it is process-wide.
ALLOWED = {
    ("core/log.py", "_once"): "the keys log_once already logged",
    ("core/patching.py", "_patches"): "what we patched, for uninstall (a patch changes a class for the whole interpreter)",
    ("core/patching.py", "_undo_actions"): "undo callables of registered hooks",
    ("core/patching.py", "errors"): "the count of our errors (stats, tests)",
    ("core/patching.py", "suppress_active"): "read first by the hot path (a plain list is cheaper than the thread-local)",
    ("core/recorder/__init__.py", "_recorder"): "THE Recorder every patch and integration holds",
    ("core/recorder/__init__.py", "_recorder_lock"): "guards creating it",
    ("core/sysmetrics.py", "current"): "the latest system sample, replaced atomically",
}


def module_state(package: Path):
    """{(module, name): line} of module-level names bound to a mutable container or None."""
    found = {}
    for sub in ("core", "integrations"):
        for path in sorted((package / sub).rglob("*.py")):
            if path.name == "index.py":  # generated literal tables, read-only
                continue
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Assign):
                    targets, value = node.targets, node.value
                elif isinstance(node, ast.AnnAssign) and node.value is not None:
                    targets, value = [node.target], node.value
                else:
                    continue
                mutable = isinstance(value, _CONTAINERS) or (isinstance(value, ast.Constant) and value.value is None)
                if isinstance(value, ast.Call):
                    func = value.func
                    mutable |= (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) in _CALLS
                for target in targets:
                    if mutable and isinstance(target, ast.Name) and not target.id.isupper() \
                            and not target.id.startswith("__"):
                        found[(path.relative_to(package).as_posix(), target.id)] = node.lineno
    return found


def _documented(package: Path, module: str, line: int) -> bool:
    """A comment on the line, or in the block of lines right above it (no blank line between:
    related globals may share one comment)."""
    lines = (package / module).read_text(encoding="utf-8").splitlines()
    index = line - 1
    while index >= 0 and lines[index].strip():
        if "#" in lines[index]:
            return True
        index -= 1
    return False


def test_module_level_state_is_only_the_documented_process_wide_kind():
    found = module_state(PACKAGE)
    assert sorted(found) == sorted(ALLOWED), "module-level mutable state changed: document it or move it into an object"
    undocumented = [key for key, line in found.items() if not _documented(PACKAGE, key[0], line)]
    assert undocumented == [], "say at the definition why this state is process-wide"


def test_the_check_sees_a_new_global(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "integrations").mkdir()
    (tmp_path / "integrations" / "myfw.py").write_text("LIMITS = {}\n_claimed = set()\n_cls = None\nx: dict = {}\n")
    assert sorted(module_state(tmp_path)) == [("integrations/myfw.py", "_claimed"), ("integrations/myfw.py", "_cls"),
                                              ("integrations/myfw.py", "x")]
