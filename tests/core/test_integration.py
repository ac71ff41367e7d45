"""THE version gate (core/integration.py): half-open ranges, a declared policy for unknown versions."""

import pytest

from primus_lens_wandb_exporter.core.integration import NotEnabled, VersionRange, version_tuple


@pytest.mark.parametrize("text, width, parsed", [
    ("2.6.6+cu121", 3, (2, 6, 6)), ("0.15.0rc2", 3, (0, 15, 0)), ("26.2", 3, (26, 2, 0)),
    ("26.5.1", 2, (26, 5)), ("3.0.0a0", 3, (3, 0, 0)), ("x.y", 2, (0, 0)),
])
def test_version_tuple_reads_the_leading_digits_of_each_part(text, width, parsed):
    assert version_tuple(text, width) == parsed


@pytest.mark.parametrize("version, allowed", [
    ("0.14.99", False), ("0.15", True), ("0.15.0rc1", True), ("0.20.7", True), ("0.21.0", False), ("1.0", False),
])
def test_the_high_bound_is_exclusive_and_compared_on_the_declared_parts(version, allowed):
    # Megatron's range: what the old closed [0.15, 0.20] with prefix comparison admitted.
    assert VersionRange((0, 15), (0, 21), unknown="allow").allows(version) is allowed


@pytest.mark.parametrize("version", [None, ""])
def test_an_unknown_version_gets_the_declared_policy(version):
    assert VersionRange((2, 0, 0), (2, 14, 0)).allows(version) is False
    assert VersionRange((2, 0, 0), (2, 14, 0), unknown="allow").allows(version) is True


def test_no_high_bound_means_every_later_release():
    gate = VersionRange((0, 19, 0))
    assert gate.allows("0.19.11") and gate.allows("7.0") and not gate.allows("0.18.9")


def test_check_raises_not_enabled_saying_why():
    with pytest.raises(NotEnabled, match=r"^deepspeed 0\.20\.0 is outside the tested range \[0\.14\.0, 0\.20\.0\)$"):
        VersionRange((0, 14, 0), (0, 20, 0)).check("0.20.0", "deepspeed")
    VersionRange((0, 14, 0), (0, 20, 0)).check("0.19.8", "deepspeed")  # inside: no exception


def test_an_unknown_policy_name_is_refused():
    with pytest.raises(ValueError):
        VersionRange((1,), unknown="maybe")


def test_integration_modules_keep_their_state_in_their_integration_objects():
    # Module-level mutable values (dicts, sets, None placeholders, thread-locals ...) in
    # integrations/ hide per-process state; each integration holds one ``state`` object instead.
    import ast
    import pathlib

    import primus_lens_wandb_exporter.integrations as package

    mutable_calls = {"dict", "list", "set", "WeakSet", "WeakKeyDictionary", "WeakValueDictionary", "local", "Lock"}
    found = []
    for path in sorted(pathlib.Path(package.__file__).parent.glob("*.py")):
        body = ast.parse(path.read_text()).body
        classes = {node.name for node in body if isinstance(node, ast.ClassDef)}  # an instance of its own class
        for node in body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            value = getattr(node, "value", None)
            call = value.func if isinstance(value, ast.Call) else None
            name_of_call = getattr(call, "attr", None) or getattr(call, "id", None)
            mutable = (isinstance(value, (ast.Dict, ast.List, ast.Set))
                       or (isinstance(value, ast.Constant) and value.value is None)
                       or name_of_call in mutable_calls or name_of_call in classes)
            for target in targets:
                if isinstance(target, ast.Name) and mutable and not target.id.isupper():
                    found.append(f"{path.name}:{node.lineno} {target.id}")
    assert found == []
