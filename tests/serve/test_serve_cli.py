"""`uprise retrieve` / `uprise demo` command lines, called with argv lists like the dispatcher."""

from __future__ import annotations

import json

import pytest

from serve import PromptRetriever, demo_main, retrieve_main

QUERY = "Premise: the cat sat on the mat. Hypothesis: an animal sat."


def test_retrieve_json_matches_the_python_api(retriever_dir, capsys):
    retrieve_main(["--retriever", str(retriever_dir), "--query", QUERY, "-k", "2", "--augment",
                   "--json"])
    out = json.loads(capsys.readouterr().out)
    expected = PromptRetriever.from_pretrained(retriever_dir)
    assert [p["id"] for p in out["prompts"]] == [h.id for h in expected.retrieve(QUERY, k=2)]
    assert out["augmented"] == expected.augment(QUERY, k=2)
    assert set(out["prompts"][0]) == {"id", "text", "task", "cluster", "score", "rank"}


def test_retrieve_plain_text(retriever_dir, capsys):
    retrieve_main(["--retriever", str(retriever_dir), "--query", QUERY])
    out = capsys.readouterr().out
    assert out.startswith("1. score=") and "\n3. score=" in out and "augmented" not in out


def test_retrieve_with_a_token_budget(retriever_dir, capsys):
    retrieve_main(["--retriever", str(retriever_dir), "--query", QUERY, "--augment", "--json",
                   "--max-tokens", "5"])
    assert json.loads(capsys.readouterr().out)["augmented"] == QUERY


def test_retrieve_bad_directory_exits_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        retrieve_main(["--retriever", str(tmp_path / "missing"), "--query", QUERY])


def test_retrieve_rejects_bad_k(retriever_dir, capsys):
    with pytest.raises(SystemExit):
        retrieve_main(["--retriever", str(retriever_dir), "--query", QUERY, "-k", "0"])
    assert "-k 0" in capsys.readouterr().err


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--help"])
    assert exit_info.value.code == 0 and "--retriever" in capsys.readouterr().out


def test_demo_bad_directory_exits_with_a_message(tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install uprise[demo])")
    with pytest.raises(SystemExit, match="does not exist"):
        demo_main(["--retriever", str(tmp_path / "missing")])


def test_retrieve_filters_and_diversity_match_the_python_api(retriever_dir, capsys):
    retrieve_main(["--retriever", str(retriever_dir), "--query", QUERY, "-k", "2", "--json",
                   "--cluster", "nli,sentiment", "--exclude-task", "rte", "--diversity", "0.3"])
    out = json.loads(capsys.readouterr().out)
    expected = PromptRetriever.from_pretrained(retriever_dir).retrieve(
        QUERY, k=2, filters={"cluster": ["nli", "sentiment"], "exclude_task": ["rte"]},
        diversity=0.3)
    assert [p["id"] for p in out["prompts"]] == [h.id for h in expected]
    assert out["prompts"] and all(p["cluster"] in {"nli", "sentiment"} and p["task"] != "rte"
                                  for p in out["prompts"])
    assert out["filters"] == {"cluster": ["nli", "sentiment"], "exclude_task": ["rte"]}


def test_retrieve_unknown_filter_value_exits_naming_it(retriever_dir):
    with pytest.raises(SystemExit, match="names no cluster in this pool.*known clusters"):
        retrieve_main(["--retriever", str(retriever_dir), "--query", QUERY, "--cluster", "nope"])



def test_filters_that_exclude_everything_say_so(retriever_dir):
    with pytest.raises(SystemExit, match="no pool prompt passes the filters"):
        retrieve_main(["--retriever", str(retriever_dir), "--query", QUERY, "--task", "rte",
                       "--exclude-cluster", "nli"])
