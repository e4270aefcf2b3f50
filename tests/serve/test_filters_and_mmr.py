"""Filters by task/cluster and MMR diversity, on the real tiny retriever against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from serve import PromptFilter, mmr_order

QUERY = "Premise: the cat sat on the mat. Hypothesis: an animal sat."
DUP_GROUP = {"rte-0", "rte-dup-1", "rte-dup-2", "rte-dup-3"}


def _ranking(retriever, query, keep):
    """Brute-force ranking (ids best first) of the prompts for which `keep(prompt)` holds."""
    q_emb = retriever.encoder.encode_query([query], convert_to_numpy=True)  # (1, dim)
    p_emb = retriever.encoder.encode_document([p.text for p in retriever.prompts],
                                              convert_to_numpy=True)  # (n_prompts, dim)
    scores = (q_emb @ p_emb.T)[0]  # (n_prompts,)
    order = np.argsort(-scores, kind="stable")
    return [retriever.prompts[i].id for i in order if keep(retriever.prompts[i])]


@pytest.mark.parametrize(("filters", "keep"), [
    ({"cluster": ["nli", "sentiment"]}, lambda p: p.cluster in ("nli", "sentiment")),
    ({"task": "piqa"}, lambda p: p.task == "piqa"),
    ({"exclude_task": ["rte", "sst2"]}, lambda p: p.task not in ("rte", "sst2")),
    (PromptFilter(cluster=("nli", "commonsense"), exclude_task=("rte",)),
     lambda p: p.cluster in ("nli", "commonsense") and p.task != "rte"),
    ({"exclude_cluster": "struct_to_text"}, lambda p: p.cluster != "struct_to_text"),
])
def test_filtered_retrieval_equals_brute_force_on_the_subset(prompt_retriever, filters, keep):
    expected = _ranking(prompt_retriever, QUERY, keep)
    hits = prompt_retriever.retrieve(QUERY, k=4, filters=filters)
    assert [h.id for h in hits] == expected[:4]  # k whenever k prompts pass, else all of them
    assert all(keep(p) for p in prompt_retriever.prompts if p.id in {h.id for h in hits})
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_filter_batch_and_augment_batch_match_single_calls(prompt_retriever):
    queries = [QUERY, "Review: a dull film. Answer:"]
    flt = {"cluster": ["sentiment", "commonsense"]}
    batch = prompt_retriever.retrieve_batch(queries, k=3, filters=flt, diversity=0.4)
    singles = [prompt_retriever.retrieve(q, k=3, filters=flt, diversity=0.4) for q in queries]
    assert [[h.id for h in row] for row in batch] == [[h.id for h in row] for row in singles]
    np.testing.assert_allclose([h.score for row in batch for h in row],
                               [h.score for row in singles for h in row], atol=1e-5)
    augmented = prompt_retriever.augment_batch(queries, k=3, max_tokens=40, filters=flt)
    assert augmented == [prompt_retriever.augment(q, k=3, max_tokens=40, filters=flt)
                         for q in queries]


def test_filters_name_unknown_keys_and_values(prompt_retriever):
    with pytest.raises(ValueError, match=r"unknown filter key\(s\) \['clusters'\].*exclude_task"):
        prompt_retriever.retrieve(QUERY, filters={"clusters": ["nli"]})
    with pytest.raises(ValueError, match=r"cluster=\['nope'\].*known clusters: \['commonsense'"):
        prompt_retriever.retrieve(QUERY, filters={"cluster": ["nli", "nope"]})
    with pytest.raises(ValueError, match=r"exclude_task=\['sst3'\].*known tasks"):
        prompt_retriever.retrieve(QUERY, filters=PromptFilter(exclude_task=("sst3",)))
    with pytest.raises(TypeError, match="list of strings"):
        PromptFilter(task=[1, 2])
    assert prompt_retriever.tasks == ["common_gen", "piqa", "rte", "sst2"]
    assert "struct_to_text" in prompt_retriever.clusters


def test_a_filter_that_excludes_everything_returns_nothing(prompt_retriever):
    flt = {"cluster": "nli", "exclude_task": "rte"}
    assert prompt_retriever.retrieve(QUERY, k=3, filters=flt) == []


def test_mmr_zero_is_plain_top_k_and_diversity_skips_near_duplicates(dup_retriever):
    plain = dup_retriever.retrieve(QUERY, k=4)
    assert dup_retriever.retrieve(QUERY, k=4, diversity=0.0) == plain
    assert len({h.id for h in plain} & DUP_GROUP) >= 3  # near-copies crowd plain top-k
    # A strong weight on novelty: in the random-init tiny tower every prompt is fairly similar
    # to every other, so a mild weight (0.5) dropped a different number of copies on different
    # machines; the exact MMR picks are checked by hand in the `mmr_order` test below.
    diverse = dup_retriever.retrieve(QUERY, k=4, diversity=0.9)
    assert diverse[0] == plain[0]  # the best prompt stays first
    assert len({h.id for h in diverse} & DUP_GROUP) == 1
    assert len({h.text.rstrip(" .") for h in diverse}) == 4
    assert dup_retriever.retrieve(QUERY, k=4, diversity=0.9) == diverse  # deterministic


def test_mmr_order_against_hand_computed_picks():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # 0 and 1 identical, 2 orthogonal
    scores = np.array([0.9, 0.9, 0.5])
    assert mmr_order(scores, emb, 2, 0.0) == [0, 1]
    # pick 2: candidate 1 gains 0.5*0.9 - 0.5*1 = -0.05, candidate 2 gains 0.5*0.5 - 0 = 0.25
    assert mmr_order(scores, emb, 2, 0.5) == [0, 2]
    assert mmr_order(scores, emb, 3, 0.5) == [0, 2, 1]
    # with little diversity weight relevance wins: 0.9*0.9 - 0.1 = 0.71 > 0.9*0.5 = 0.45
    assert mmr_order(scores, emb, 2, 0.1) == [0, 1]


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.3"])
def test_bad_diversity_is_refused(prompt_retriever, bad):
    with pytest.raises(ValueError, match="diversity="):
        prompt_retriever.retrieve(QUERY, k=3, diversity=bad)


def test_in_memory_add_prompts_are_retrievable(dup_retriever):
    from flan_data.schema import Prompt
    from serve import PromptRetriever

    fresh = PromptRetriever(dup_retriever.encoder, _copy_index(dup_retriever.index),
                            dup_retriever.prompts)
    new = Prompt("new-0", "boolq", "closed_book_qa", 0, "Question: is water wet? Answer: yes")
    fresh.add_prompts([new])
    assert fresh.prompts[-1] == new and fresh.index.ntotal == len(fresh.prompts)
    hits = fresh.retrieve(new.text, k=1, filters={"task": "boolq"})
    assert [h.id for h in hits] == ["new-0"]
    with pytest.raises(ValueError, match="new-0"):
        fresh.add_prompts([new])


def _copy_index(index):
    import faiss

    return faiss.deserialize_index(faiss.serialize_index(index))
