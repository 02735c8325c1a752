"""A package adds a component kind through the `compound.backends` entry-point group."""

import sys
import textwrap

import torch

import compound
from compound import backends

PLUGIN = '''
import torch
from torch import nn

from compound.backends import Kind, Signature
from compound.backends.base import Backend


class Lengths(Backend):
    """A toy kind: scores a text by w * its length (w is the one parameter)."""

    spec = Kind("lengths", Signature(("text",), "text"))

    @classmethod
    def load(cls, component, root, weights=None, reference=None):
        model = nn.Linear(1, 1, bias=False)
        nn.init.constant_(model.weight, 1.0)
        return cls(component, model, reference)

    def prepare(self, condition, value, options):
        return float(len(value))

    def _score(self, model, items, draws):
        return model(torch.tensor(items)[:, None]).squeeze(1)
'''


def test_an_installed_entry_point_adds_a_kind(tmp_path, monkeypatch, write_system):
    (tmp_path / "lengths_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "lengths_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lengths-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[compound.backends]\nlengths = lengths_plugin:Lengths\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    backends._plugins.cache_clear()
    try:
        assert "lengths" in backends.kinds()
        assert str(backends.signature("lengths")) == "text -> text"
        cmp = write_system(
            'system s\ncomponent counter = lengths("unused")\ninput x : text\n'
            "y : text ~ counter(x)\noutput y\n"
        )
        system = compound.load(cmp)
        with torch.no_grad():
            system.backend("counter").model.weight.fill_(3.0)
        out = system.log_ratio([{"x": "a", "y": "four"}], [{"x": "a", "y": "sixsix"}])
        assert out.chosen.item() == 3 * 4 - 4 and out.rejected.item() == 3 * 6 - 6
    finally:
        sys.modules.pop("lengths_plugin", None)
        backends._plugins.cache_clear()
