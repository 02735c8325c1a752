"""A package adds a component kind through the `compound.backends` entry-point group."""

import sys
import textwrap

import pytest
import torch

import compound
from compound import backends

PLUGIN = '''
import pytest
import torch
from torch import nn

from compound.backends import Kind, Signature
from compound.backends.base import Backend


class Lengths(Backend):
    """A toy kind: scores a text by w * its length (w is the one parameter)."""

    spec = Kind("lengths", Signature(("text",), "text"))

    @classmethod
    def load(cls, component, root, reference=None, trust_remote_code=False):
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


WORDS = '''
import pytest
import torch
from torch import nn

from compound.backends import Kind, Signature
from compound.backends.base import Backend


class Words(Backend):
    """A toy kind that samples: "ab" or "abcd", scored by w * length."""

    spec = Kind("words", Signature(("text",), "text"))

    @classmethod
    def load(cls, component, root, reference=None, trust_remote_code=False):
        return cls(component, nn.Linear(1, 1, bias=False), reference)

    def prepare(self, condition, value, options):
        return float(len(value))

    def _score(self, model, items, draws):
        return model(torch.tensor(items)[:, None]).squeeze(1)

    def sample(self, conditions, generator, **options):
        return [("ab", "abcd")[int(torch.randint(0, 2, (1,), generator=generator))] for _ in conditions]
'''


def test_a_plugin_kind_gets_sysdpo_sampling_candidates_from_the_contract(tmp_path, monkeypatch, write_system):
    """`candidates` is part of the contract: by default distinct draws of `sample`; a kind without a
    search of its own or without `sample` says so instead of failing with an AttributeError."""
    from compound.interpret.candidates import candidates

    (tmp_path / "toy_plugins.py").write_text(textwrap.dedent(PLUGIN) + textwrap.dedent(WORDS))
    info = tmp_path / "toy_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[compound.backends]\nlengths = toy_plugins:Lengths\nwords = toy_plugins:Words\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    backends._plugins.cache_clear()
    try:
        for kind, strategy, expected in (
            ("words", "sample", None),
            ("words", "beam", "no beam search"),
            ("lengths", "sample", "cannot sample"),
        ):
            cmp = write_system(
                f'system s\ncomponent first = {kind}("unused")\ncomponent second = lengths("unused")\n'
                "input x : text\ny : text ~ first(x)\nz : text ~ second(y)\noutput z\n"
            )
            system = compound.load(cmp)
            draw = torch.Generator().manual_seed(0)
            if expected is None:
                found = candidates(system.system, system.backends, {"x": "q", "z": "yes"}, 8, strategy, draw)
                assert sorted(a["y"] for a in found) == ["ab", "abcd"]  # distinct values of 8 draws
                out = system.log_ratio(
                    [{"x": "q", "z": "yes"}], [{"x": "q", "z": "no"}], candidates={0: found}
                )
                assert out.chosen.shape == (1,)
            else:
                with pytest.raises(compound.CompoundError, match=expected):
                    candidates(system.system, system.backends, {"x": "q", "z": "yes"}, 2, strategy, draw)
    finally:
        sys.modules.pop("toy_plugins", None)
        backends._plugins.cache_clear()
