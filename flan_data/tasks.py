"""The built-in tasks: the UPRISE clusters over the datasets of the offline mirror.

Each converter reads one row in the Hugging Face column schema and returns an `Example`;
each task has three instruction templates written for this project. Rows whose label is
missing (-1, as in unlabelled test splits) are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flan_data.task_types import Example, Task

YES_NO = ["yes", "no"]
NO_YES = ["no", "yes"]


def _labelled(row: Mapping[str, Any], key: str = "label") -> int | None:
    label = row.get(key)
    return None if label is None or label == -1 else int(label)


def _choice(fields: dict[str, str], options: list[str], gold: int | None) -> Example | None:
    return None if gold is None else Example(fields=fields, options=options, gold=gold)


def _lettered(row: Mapping[str, Any], question_key: str) -> Example | None:
    """ARC / OpenBookQA: `choices: {text, label}` and a string `answerKey`."""
    labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    if row.get("answerKey") not in labels:
        return None
    listing = "\n".join(f"- {t}" for t in texts)
    return _choice(
        {"question": row[question_key], "options_": listing}, texts, labels.index(row["answerKey"])
    )


def _generation(fields: dict[str, str], references: list[str]) -> Example | None:
    references = [r.strip() for r in references if r and r.strip()]
    return Example(fields=fields, references=references) if references else None


_BUILTIN: list[Task] = []


def _task(name: str, cluster: str, hf: str, config: str | None, eval_split: str, kind, metric,
          convert, templates: tuple[str, ...], mirror: str | None = None,
          train_split: str | None = "train", max_new_tokens: int = 32) -> None:
    mirror = mirror or (hf if config is None else f"{hf}-{config}")
    _BUILTIN.append(Task(name, cluster, hf, config, mirror, eval_split, kind, metric, convert,
                         templates, train_split, max_new_tokens))


# --- sentiment ---------------------------------------------------------------------------
_task("sst2", "sentiment", "glue", "sst2", "validation", "choice", "accuracy",
      lambda r: _choice({"text": r["sentence"].strip()}, ["negative", "positive"], _labelled(r)),
      ("Review: {text}\nIs this movie review positive or negative?\nAnswer:",
       "{text}\nWhat is the sentiment of this sentence, positive or negative?",
       "Movie review: \"{text}\"\nSentiment:"))

_S140 = {0: 0, 2: 1, 4: 2}
_task("sentiment140", "sentiment", "sentiment140", "sentiment140", "test", "choice", "accuracy",
      lambda r: _choice({"text": r["text"]}, ["negative", "neutral", "positive"],
                        _S140.get(r["sentiment"])),
      ("Tweet: {text}\nIs the sentiment of this tweet negative, neutral or positive?\nAnswer:",
       "{text}\nHow does the author of this tweet feel? (negative, neutral, positive)",
       "What is the sentiment of the following tweet?\n{text}\nSentiment:"),
      mirror="sentiment140")

# --- natural language inference ----------------------------------------------------------
_task("rte", "nli", "super_glue", "rte", "validation", "choice", "accuracy",
      lambda r: _choice({"premise": r["premise"], "hypothesis": r["hypothesis"]}, YES_NO,
                        _labelled(r)),
      ("{premise}\nBased on the paragraph above, is it true that \"{hypothesis}\"? yes or no?",
       "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis?",
       "{premise}\nQuestion: {hypothesis} Yes or no?\nAnswer:"))

_task("qnli", "nli", "glue", "qnli", "validation", "choice", "accuracy",
      lambda r: _choice({"question": r["question"], "sentence": r["sentence"]}, YES_NO,
                        _labelled(r)),
      ("Does the sentence \"{sentence}\" answer the question \"{question}\"? yes or no?",
       "Question: {question}\nSentence: {sentence}\nDoes the sentence contain the answer?",
       "{sentence}\nCan this sentence answer \"{question}\"?\nAnswer:"))

# --- paraphrase --------------------------------------------------------------------------
_task("mrpc", "paraphrase", "glue", "mrpc", "validation", "choice", "accuracy",
      lambda r: _choice({"s1": r["sentence1"], "s2": r["sentence2"]}, NO_YES, _labelled(r)),
      ("Sentence 1: {s1}\nSentence 2: {s2}\nDo these two sentences mean the same thing?",
       "\"{s1}\"\n\"{s2}\"\nAre these two sentences paraphrases of each other? yes or no?",
       "Do the sentences \"{s1}\" and \"{s2}\" convey the same meaning?\nAnswer:"))

# --- commonsense -------------------------------------------------------------------------
_COPA_Q = {"cause": "What was the cause?", "effect": "What happened as a result?"}
_task("copa", "commonsense", "super_glue", "copa", "validation", "choice", "accuracy",
      lambda r: _choice({"premise": r["premise"], "q": _COPA_Q[r["question"]],
                         "c1": r["choice1"], "c2": r["choice2"]},
                        [r["choice1"], r["choice2"]], _labelled(r)),
      ("{premise} {q}\nOptions:\n- {c1}\n- {c2}\nAnswer:",
       "Premise: {premise}\n{q}",
       "{premise}\n{q} Pick the more plausible option: \"{c1}\" or \"{c2}\"?"))

_task("piqa", "commonsense", "piqa", "plain_text", "validation", "choice", "accuracy",
      lambda r: _choice({"goal": r["goal"], "s1": r["sol1"], "s2": r["sol2"]},
                        [r["sol1"], r["sol2"]], _labelled(r)),
      ("Goal: {goal}\nWhich is the better way to do this?\n- {s1}\n- {s2}\nAnswer:",
       "How would you do this: {goal}",
       "{goal}\nPick the right solution:"),
      mirror="piqa")

# --- coreference -------------------------------------------------------------------------
_task("wsc", "coreference", "super_glue", "wsc.fixed", "validation", "choice", "accuracy",
      lambda r: _choice({"text": r["text"], "span1": r["span1_text"], "span2": r["span2_text"]},
                        NO_YES, _labelled(r)),
      ("{text}\nIn the passage above, does \"{span2}\" refer to \"{span1}\"?",
       "Sentence: {text}\nQuestion: Is \"{span2}\" the same as \"{span1}\"? yes or no?\nAnswer:",
       "{text}\nDoes the pronoun \"{span2}\" refer to {span1}?"))

_task("wsc273", "coreference", "winograd_wsc", "wsc273", "test", "choice", "accuracy",
      lambda r: _choice({"text": r["text"], "pronoun": r["pronoun"]}, list(r["options"]),
                        _labelled(r)),
      ("{text}\nWho or what does \"{pronoun}\" refer to?\nAnswer:",
       "Sentence: {text}\nIn this sentence, \"{pronoun}\" means",
       "{text}\nWhat does the pronoun \"{pronoun}\" refer to?"),
      train_split=None)

# --- reading comprehension ---------------------------------------------------------------
_task("multirc", "reading_comprehension", "super_glue", "multirc", "validation", "choice",
      "accuracy",
      lambda r: _choice({"paragraph": r["paragraph"], "question": r["question"],
                         "answer": r["answer"]}, NO_YES, _labelled(r)),
      ("{paragraph}\nQuestion: {question}\nIs \"{answer}\" a correct answer?",
       "Read the text and answer yes or no.\n{paragraph}\n{question} Is it \"{answer}\"?",
       "{paragraph}\nBased on the text, is \"{answer}\" the answer to \"{question}\"?"))

_task("boolq", "reading_comprehension", "super_glue", "boolq", "validation", "choice", "accuracy",
      lambda r: _choice({"passage": r["passage"], "question": r["question"]}, NO_YES,
                        _labelled(r)),
      ("{passage}\nQuestion: {question}?\nAnswer:",
       "Read the passage and answer yes or no.\n{passage}\n{question}?",
       "Passage: {passage}\nAfter reading this passage, can we say: {question}?"))

_task("openbookqa", "reading_comprehension", "openbookqa", "main", "test", "choice", "accuracy",
      lambda r: _lettered(r, "question_stem"),
      ("{question}\nOptions:\n{options_}\nAnswer:",
       "Question: {question}\nWhich of these is correct?\n{options_}",
       "Fact-based question: {question}\nAnswer:"))

# --- closed-book QA ----------------------------------------------------------------------
_task("arc_challenge", "closed_book_qa", "ai2_arc", "ARC-Challenge", "test", "choice",
      "accuracy", lambda r: _lettered(r, "question"),
      ("{question}\nOptions:\n{options_}\nAnswer:",
       "Science question: {question}\nPick the right answer.\n{options_}",
       "Question: {question}\nAnswer:"))

_task("arc_easy", "closed_book_qa", "ai2_arc", "ARC-Easy", "test", "choice", "accuracy",
      lambda r: _lettered(r, "question"),
      ("{question}\nOptions:\n{options_}\nAnswer:",
       "Science question: {question}\nPick the right answer.\n{options_}",
       "Question: {question}\nAnswer:"))

_task("nq_open", "closed_book_qa", "nq_open", "nq_open", "validation", "generation",
      "exact_match", lambda r: _generation({"question": r["question"]}, list(r["answer"])),
      ("Question: {question}?\nAnswer:",
       "Answer this question: {question}?",
       "Q: {question}?\nA:"),
      mirror="nq_open")

# --- structure to text -------------------------------------------------------------------
_task("common_gen", "struct_to_text", "common_gen", None, "validation", "generation", "rouge_l",
      lambda r: _generation({"concepts": ", ".join(r["concepts"])}, [r["target"]]),
      ("Concepts: {concepts}\nWrite a sentence that uses all these concepts:",
       "Make a sentence with the words {concepts}.",
       "Words: {concepts}\nSentence:"))

_task("e2e_nlg", "struct_to_text", "e2e_nlg", None, "test", "generation", "rouge_l",
      lambda r: _generation({"mr": r["meaning_representation"]}, [r["human_reference"]]),
      ("Attributes: {mr}\nDescribe this restaurant in one sentence:",
       "Turn this data into a sentence: {mr}",
       "{mr}\nRestaurant description:"),
      max_new_tokens=64)  # references (SmolLM2 tokens): median 29, 90th pct 42, longest 64

_task("dart", "struct_to_text", "dart", None, "validation", "generation", "rouge_l",
      lambda r: _generation({"triples": "; ".join(" | ".join(t) for t in r["tripleset"])},
                            list(r["annotations"]["text"])),
      ("Triples: {triples}\nWrite a sentence that states these facts:",
       "Data: {triples}\nSentence:",
       "Describe the following data in words: {triples}"),
      max_new_tokens=64)  # references (SmolLM2 tokens): median 28, 90th pct 43

# --- summarization -----------------------------------------------------------------------
_task("aeslc", "summarization", "aeslc", None, "test", "generation", "rouge_l",
      lambda r: _generation({"body": r["email_body"].strip()}, [r["subject_line"]]),
      ("Email: {body}\nWrite a subject line for this email:",
       "{body}\nSubject:",
       "What is a good subject line for this email?\n{body}"))

_task("ag_news", "summarization", "ag_news", None, "test", "choice", "accuracy",
      lambda r: _choice({"text": r["text"]}, ["World", "Sports", "Business", "Science"],
                        _labelled(r)),
      ("News: {text}\nWhich topic is this article about: World, Sports, Business or Science?",
       "{text}\nTopic:",
       "What is this news story about?\n{text}\nAnswer:"))

BUILTIN_TASKS: tuple[Task, ...] = tuple(_BUILTIN)
"""Every built-in task, in catalogue order (`flan_data.catalogue` registers them)."""
