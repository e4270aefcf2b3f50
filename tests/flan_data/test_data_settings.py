"""`DataSettings`: the protocol options declared once (every command line shows the same flags
and help), checked before anything loads, and built into the same stage data as
`build_stage_data` with the same values."""

from __future__ import annotations

import pytest

from flan_data import build_stage_data
from flan_data.cli import data_parser
from flan_data.settings import OPTIONS, DataSettings
from uprise.evaluation_cli import _parser as eval_parser
from uprise.quickstart import quickstart_parser


def _protocol_actions(parser) -> dict[str, tuple]:
    return {a.dest: (a.option_strings, a.help, a.type, a.nargs) for a in parser._actions
            if a.dest in OPTIONS}


def test_every_command_line_declares_the_protocol_options_the_same_way():
    full = _protocol_actions(data_parser())
    assert set(full) == set(OPTIONS)
    for parser in (quickstart_parser(), eval_parser()):
        shared = _protocol_actions(parser)
        if parser.prog == "uprise eval":  # its --seed (default 42) also seeds the evaluation
            assert shared.pop("seed")[1] is None
        assert len(shared) >= 4
        for dest, (flags, help_text, kind, nargs) in shared.items():
            assert flags == full[dest][0] and kind == full[dest][2] and nargs == full[dest][3]
            assert _text(full[dest][1]) == _text(help_text)  # each adds its "(default ...)"
        parsed = vars(parser.parse_args(_required(parser)))
        assert all(parsed[k] is None for k in shared)  # a config file supplies unset values


def _text(help_text: str) -> str:
    return help_text.split(" (default", 1)[0]


def _required(parser) -> list[str]:
    return ["--output-dir", "x", "--clusters", "all"] if parser.prog == "uprise eval" else []


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_candidates": 0}, "--n-candidates 0: expected an integer >= 1"),
    ({"eval_per_task": 0}, r"--eval-per-task 0: expected an integer >= 1 \(omit it for all\)"),
    ({"carve_fraction": 0.0}, r"--carve-fraction 0.0: expected a fraction in \(0, 1\]"),
    ({"held_out_cluster": "nope"}, "unknown cluster 'nope'"),
    ({"held_out_cluster": "nli", "train_clusters": ["nli"]}, "also listed in train_clusters"),
    ({"in_task": "no_such_task"}, "no_such_task"),
    ({"dev_per_task": 5}, "--dev-per-task 5: development queries are an in-task option"),
    ({"in_task": "rte", "dev_per_task": -1}, "--dev-per-task -1: expected an integer >= 0"),
    ({"n_candidates": 4, "cross_cluster_candidates": 5},
     r"--cross-cluster-candidates 5: expected at most --n-candidates \(4\)"),
    ({"cross_cluster_candidates": -1}, "--cross-cluster-candidates -1: expected an integer >= 0"),
    ({"in_task": "rte", "cross_cluster_candidates": 2},
     "--cross-cluster-candidates 2: in-task mode has one task and no other cluster"),
])
def test_check_names_the_option(changes, message):
    with pytest.raises(ValueError, match=message):
        DataSettings(**changes).check()


def test_build_is_build_stage_data_with_the_same_values(shared_data_dir):
    settings = DataSettings(held_out_cluster="sentiment", train_clusters=["nli", "paraphrase"],
                            seed=3, pool_per_task=6, queries_per_task=2, n_candidates=2,
                            cross_cluster_candidates=1, eval_per_task=2, max_prompt_chars=400)
    settings.check()
    built = settings.build(shared_data_dir)
    direct = build_stage_data("sentiment", shared_data_dir, ["nli", "paraphrase"], seed=3,
                              pool_per_task=6, queries_per_task=2, n_candidates=2,
                              eval_per_task=2, max_prompt_chars=400, cross_cluster_candidates=1)
    assert built.manifest == direct.manifest
    assert [p.id for p in built.pool] == [p.id for p in direct.pool]
    assert [c.prompt_ids for c in built.candidates] == [c.prompt_ids for c in direct.candidates]
