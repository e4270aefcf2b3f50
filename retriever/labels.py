"""Training labels from the LM's scores: positives, hard negatives, label values, task filter.

Contract: `build_training_examples(scores, n_hard_negatives, ...)` turns `Score` records into
one `TrainingExample` per query. Pure Python (no torch), deterministic: ties break by prompt id.

A candidate's *value* is what the labels compare, in the log domain so that a softmax over it
at a temperature is an informative distillation target (LLM-R, Wang et al. 2023, distils
log-likelihoods at a low temperature):

    choice task      log of `Score.score` (the gold option's probability among the options)
    generation task  `Score.score` itself (minus the gold answer's mean token NLL)

Options (each measured; see the README's "Training labels" section for the defaults):

- `label_copy_correction`: on fixed-option tasks a demonstration mostly pulls a small LM
  towards its own answer, so the best-scored prompt is largely one whose answer equals the
  query's gold label, which no retriever can predict from the query. With the correction a
  candidate's value is centred within the group of candidates that carry the same answer (its
  residual over that group's mean), so a prompt is judged by what it adds beyond its label. The
  candidate's answer is the query option its text ends with (a prompt is its rendered input, a
  space and its gold answer); candidates of per-row-option tasks match no shared option and are
  left uncorrected. With the correction on, the positive is the best corrected value (UPRISE's
  "made the LM correct" filter is itself mostly label copying), else the best-valued candidate
  that made the LM correct (UPRISE).
- `zero_shot` (labels relative to zero-shot): given each query's zero-shot score (no
  demonstration), a candidate's value is its *gain*, its value minus the zero-shot value (what
  the prompt adds to the gold answer's log-probability or log-likelihood), and only candidates
  with a positive gain may be the positive: a query no candidate improves gives no label (every
  one of its prompts hurts or does nothing, so the best of them teaches the retriever a
  prompt that should not be used). This replaces UPRISE's "made the LM correct" filter, which
  keeps prompts that leave an already-correct answer where it was or lower it. A constant shift
  per query does not change a query's ranking, hard negatives or KD target: the option acts
  through which queries are labelled and which candidates may be positives. With
  `label_copy_correction` as well, the gain decides eligibility and the corrected value ranks.
- `positive_top_k` (LLM-R's top-k as positives, Wang et al. 2023): the query's k best eligible
  candidates take turns as its positive, one per epoch (`TrainingExample.positive_for`); when a
  lower one of the k is the positive, the better ones are valued at least as high, so the
  batch's false-negative mask keeps them out of its negatives; the hard negatives are the
  lowest-valued candidates outside the k. k = 1 is UPRISE's single positive.
- `drop_chance_tasks`: a task on which the scoring LM is not above chance (one-sided 95%,
  per-query share of correct candidates against 1 / number of options, queries as the unit)
  supplies no labels; its prompts stay in the pool. `task_accuracy` reports the test.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean, stdev

from flan_data.schema import Prompt, Query, Score

log = logging.getLogger(__name__)

Z_95_ONE_SIDED = 1.6449


@dataclass(frozen=True)
class TrainingExample:
    """One query's labels.

    positive_id / negative_ids: the contrastive labels (hard negatives = lowest values).
    candidate_ids: every scored candidate of the query, in prompt-id order; candidate_lm: their
    raw `Score.score` (ranking diagnostics); candidate_values: their label values (the KD
    target's logits before the temperature). top_ids: the `positive_top_k` best eligible
    candidates, best first (`positive_id` is the first); empty means `(positive_id,)`.
    """

    query_id: str
    positive_id: str
    negative_ids: tuple[str, ...]
    candidate_ids: tuple[str, ...]
    candidate_lm: tuple[float, ...]
    candidate_values: tuple[float, ...]
    top_ids: tuple[str, ...] = ()

    def value_of(self, prompt_id: str) -> float:
        return self.candidate_values[self.candidate_ids.index(prompt_id)]

    def positive_for(self, epoch: int) -> str:
        """The positive of training epoch `epoch`: the top candidates in turn (LLM-R)."""
        top = self.top_ids or (self.positive_id,)
        return top[epoch % len(top)]


@dataclass(frozen=True)
class TaskAccuracy:
    """How often a task's candidates made the scoring LM correct, against chance."""

    task: str
    n_queries: int
    accuracy: float  # mean over queries of the share of candidates that made the LM correct
    chance: float  # mean over queries of 1 / number of options
    z: float  # (accuracy - chance) / standard error over queries
    above_chance: bool


def value(score: Score) -> float:
    """The label value of one score: log-probability of the gold option, or the gold LL."""
    if score.correct is None:
        return score.score
    return math.log(max(score.score, 1e-12))


def candidate_answer(prompt: Prompt, query: Query) -> str | None:
    """The query option that `prompt`'s text ends with (its answer), or None."""
    if not query.options:
        return None
    matches = [o for o in query.options if o and prompt.text.endswith(" " + o)]
    return max(matches, key=len) if matches else None


def task_accuracy(scores: list[Score], queries: dict[str, Query]) -> dict[str, TaskAccuracy]:
    """Per choice task: the share of candidates that made the LM correct, tested against chance."""
    per_query: dict[str, list[bool]] = defaultdict(list)
    for s in scores:
        if s.correct is not None:
            per_query[s.query_id].append(s.correct)
    by_task: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for qid, flags in per_query.items():
        q = queries[qid]
        by_task[q.task].append((sum(flags) / len(flags), 1.0 / len(q.options or [None])))
    out = {}
    for task, rows in sorted(by_task.items()):
        acc, chance = fmean(r[0] for r in rows), fmean(r[1] for r in rows)
        diffs = [r[0] - r[1] for r in rows]
        se = stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        z = (acc - chance) / se if se > 0 else (math.inf if acc > chance else -math.inf)
        out[task] = TaskAccuracy(task, len(rows), acc, chance, z, z > Z_95_ONE_SIDED)
    return out


def _centred_by_answer(values: dict[str, float],
                       answers: dict[str, str | None]) -> dict[str, float]:
    groups: dict[str | None, list[float]] = defaultdict(list)
    for pid, v in values.items():
        groups[answers[pid]].append(v)
    if len([a for a in groups if a is not None]) < 2:
        return values  # one answer (or none known): nothing to separate
    return {pid: v - fmean(groups[answers[pid]]) for pid, v in values.items()}


def _example(query_id: str, cands: dict[str, Score], n_hard_negatives: int,
             corrected: dict[str, float] | None, zero_shot: Score | None = None,
             positive_top_k: int = 1) -> TrainingExample | None:
    ids = sorted(cands)
    values = corrected if corrected is not None else {p: value(cands[p]) for p in ids}
    if zero_shot is not None:
        base = value(zero_shot)
        eligible = [p for p in ids if value(cands[p]) > base]
        if corrected is None:
            values = {p: v - base for p, v in values.items()}
    elif corrected is not None:
        eligible = ids
    else:
        eligible = [p for p in ids if cands[p].correct is None or cands[p].correct]
    if not eligible or (corrected is not None and len(set(values.values())) < 2):
        return None
    top = sorted(eligible, key=lambda p: (-values[p], p))[:positive_top_k]
    rest = sorted((p for p in ids if p not in top), key=lambda p: (values[p], p))
    return TrainingExample(
        query_id=query_id,
        positive_id=top[0],
        negative_ids=tuple(rest[:n_hard_negatives]),
        candidate_ids=tuple(ids),
        candidate_lm=tuple(cands[p].score for p in ids),
        candidate_values=tuple(values[p] for p in ids),
        top_ids=tuple(top) if positive_top_k > 1 else (),
    )


def build_training_examples(
    scores: list[Score],
    n_hard_negatives: int,
    queries: dict[str, Query] | None = None,
    pool: dict[str, Prompt] | None = None,
    label_copy_correction: bool = False,
    drop_chance_tasks: bool = False,
    zero_shot: dict[str, Score] | None = None,
    positive_top_k: int = 1,
) -> list[TrainingExample]:
    """Labels each query from its candidates' scores (see the module docstring).

    `queries` is needed by `drop_chance_tasks` and `label_copy_correction`, `pool` by the
    latter; `zero_shot` (query id -> its zero-shot Score) turns on labels relative to zero-shot
    and must cover every scored query. `positive_top_k` (>= 1) best eligible candidates take
    turns as the positive. Queries with no eligible positive are dropped. Examples come out in
    the order queries first appear in `scores`.
    """
    if n_hard_negatives < 0:
        raise ValueError(f"n_hard_negatives={n_hard_negatives}; expected an integer >= 0.")
    if positive_top_k < 1:
        raise ValueError(f"positive_top_k={positive_top_k}; expected an integer >= 1 "
                         "(1 = the single best candidate, UPRISE).")
    if (label_copy_correction or drop_chance_tasks) and queries is None:
        raise ValueError("label_copy_correction and drop_chance_tasks need the queries.")
    if label_copy_correction and pool is None:
        raise ValueError("label_copy_correction needs the pool (the candidates' texts).")
    by_query: dict[str, dict[str, Score]] = defaultdict(dict)
    for s in scores:
        best = by_query[s.query_id].get(s.prompt_id)
        if best is None or s.score > best.score:  # duplicate pair: keep the better judgement
            by_query[s.query_id][s.prompt_id] = s
    if zero_shot is not None:
        missing = sorted(by_query.keys() - zero_shot.keys())
        if missing:
            raise KeyError(f"no zero-shot score for query {missing[0]!r} (and "
                           f"{len(missing) - 1} more); score the zero-shot pairs of every "
                           "scored query (`uprise score` writes them).")
    skip_tasks: set[str] = set()
    if drop_chance_tasks:
        accuracy = task_accuracy(scores, queries)
        skip_tasks = {t for t, a in accuracy.items() if not a.above_chance}
        for a in accuracy.values():
            log.info("labels: %s LM accuracy %.3f vs chance %.3f (z %.1f, %d queries)%s", a.task,
                     a.accuracy, a.chance, a.z, a.n_queries, "" if a.above_chance else ": skipped")
    examples, dropped, skipped = [], 0, 0
    for query_id, cands in by_query.items():
        if queries is not None and queries[query_id].task in skip_tasks:
            skipped += 1
            continue
        corrected = None
        if label_copy_correction:
            answers = {p: candidate_answer(pool[p], queries[query_id]) for p in cands}
            corrected = _centred_by_answer({p: value(s) for p, s in cands.items()}, answers)
        ex = _example(query_id, cands, n_hard_negatives, corrected,
                      zero_shot[query_id] if zero_shot is not None else None, positive_top_k)
        if ex is None:
            dropped += 1
        else:
            examples.append(ex)
    log.info("training examples: %d queries kept, %d dropped (no eligible positive%s), %d from "
             "tasks at chance", len(examples), dropped,
             ": no candidate beat zero-shot" if zero_shot is not None else "", skipped)
    return examples
