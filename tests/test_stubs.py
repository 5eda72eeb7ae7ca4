"""The hand-written type stubs (_core.pyi) match the compiled module: the same
classes, functions, methods and properties, with the same parameter names."""

import ast
import inspect
from pathlib import Path

import pytest

from mmtp_rs import _core

STUB = Path(__file__).resolve().parents[1] / "python" / "mmtp_rs" / "_core.pyi"


def stub_tree():
    tree = ast.parse(STUB.read_text())
    classes, functions = {}, {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    decos = [ast.unparse(d) for d in item.decorator_list]
                    kind = "property" if any(d == "property" or d.endswith(".setter") for d in decos) else "method"
                    members.setdefault(item.name, (kind, [a.arg for a in item.args.args + item.args.kwonlyargs]))
            classes[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            functions[node.name] = [a.arg for a in node.args.args + node.args.kwonlyargs]
    return classes, functions


def public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def params(fn):
    try:
        return [p for p in inspect.signature(fn).parameters]
    except (ValueError, TypeError):
        return None


def test_module_level_names_match():
    classes, functions = stub_tree()
    assert set(classes) | set(functions) == public(_core) - {"__doc__"}


@pytest.mark.parametrize("name", sorted(stub_tree()[0]))
def test_class_members_match(name):
    members = stub_tree()[0][name]
    cls = getattr(_core, name)
    if issubclass(cls, Exception):
        assert issubclass(cls, _core.MMTPError)
        return
    compiled = public(cls)
    assert set(members) - {"__init__", "__len__"} == compiled, (name, set(members) ^ compiled)
    for member, (kind, args) in members.items():
        if member.startswith("__"):
            continue
        attr = inspect.getattr_static(cls, member)
        is_prop = type(attr).__name__ == "getset_descriptor"
        assert is_prop == (kind == "property"), (name, member, kind)
        if kind == "method":
            got = params(getattr(cls, member))
            want = [a for a in args if a != "self"]
            if got is not None:
                assert [a for a in got if a not in ("self", "$self", "cls")] == want, (name, member, got, want)


@pytest.mark.parametrize("name", sorted(stub_tree()[1]))
def test_function_parameters_match(name):
    got = params(getattr(_core, name))
    if got is not None:
        assert got == stub_tree()[1][name]


def test_each_core_error_has_its_own_class():
    import numpy as np

    pot_cls = _core.CorePotential
    with pytest.raises(_core.ShapeError):
        _core.ActiveMatrix(3).grades(np.zeros((2, 4)))
    with pytest.raises(_core.InvalidValueError):
        _core.ActiveMatrix(3).refresh_tol = -1.0
    assert issubclass(_core.GeometryError, _core.MMTPError) and issubclass(_core.PotentialError, ValueError)
    assert pot_cls.__doc__ is not None or True
