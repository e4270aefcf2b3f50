"""Export -> plain SentenceTransformer load -> both routes encode like the BiEncoder."""

from __future__ import annotations

import json

import pytest
import torch

from retriever.export import export_retriever, load_retriever_encoder
from retriever.model import BiEncoder

TEXTS = ["a wonderful, moving film. answer: positive",
         "premise: the cat sat on the mat. hypothesis: an animal sat " * 6,  # gets truncated
         "phone"]


@pytest.fixture
def trained_like(tiny_config):
    torch.manual_seed(1)
    model = BiEncoder(tiny_config)
    with torch.no_grad():  # make the towers differ, as after training
        for p in model.prompt_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_export_loads_in_sentence_transformers_and_matches_both_towers(tmp_path, trained_like):
    from sentence_transformers import SentenceTransformer

    out = export_retriever(trained_like, tmp_path / "exp", {"seed": 7, "scoring_lm": "tiny"})
    st = SentenceTransformer(str(out), device="cpu")
    q = st.encode_query(TEXTS, convert_to_tensor=True).cpu()
    p = st.encode_document(TEXTS, convert_to_tensor=True).cpu()
    assert torch.allclose(q, trained_like.encode_queries(TEXTS), atol=1e-5)
    assert torch.allclose(p, trained_like.encode_prompts(TEXTS), atol=1e-5)
    assert not torch.allclose(q, p, atol=1e-3)  # the two routes really are two towers
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))
    assert len(list(out.rglob("model.safetensors"))) == 2


def test_export_config_and_model_card(tmp_path, trained_like):
    out = export_retriever(trained_like, tmp_path / "exp", {"held_out_cluster": "sentiment"})
    _, config = load_retriever_encoder(out)
    assert config["encoder"] == trained_like.config.to_dict()
    assert config["metadata"] == {"held_out_cluster": "sentiment"}
    assert config["query_prefix"] == "" and config["embedding_dim"] == 32
    assert json.loads((out / "uprise_config.json").read_text()) == config
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    assert "sentiment" in card


def test_export_refuses_non_empty_dir_unless_overwrite(tmp_path, trained_like):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_retriever(trained_like, out, {})
    export_retriever(trained_like, out, {}, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "uprise_config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]  # no temp dirs left behind


def test_export_reload_is_stable(tmp_path, trained_like):
    first, _ = load_retriever_encoder(export_retriever(trained_like, tmp_path / "a", {}))
    second, _ = load_retriever_encoder(tmp_path / "a")
    assert torch.equal(first.encode_query(TEXTS, convert_to_tensor=True),
                       second.encode_query(TEXTS, convert_to_tensor=True))


def test_untrained_baseline_uses_the_same_export(tmp_path, tiny_config):
    out = export_retriever(BiEncoder(tiny_config), tmp_path / "untrained", {"trained": False})
    st, config = load_retriever_encoder(out)
    assert config["metadata"]["trained"] is False
    assert "untrained baseline" in (out / "README.md").read_text()
    short = [TEXTS[0], TEXTS[2]]  # under both max lengths
    q = st.encode_query(short, convert_to_tensor=True).cpu()
    p = st.encode_document(short, convert_to_tensor=True).cpu()
    assert torch.allclose(q, p, atol=1e-6)  # both towers start from the same checkpoint


def test_load_rejects_a_directory_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a uprise retriever export"):
        load_retriever_encoder(tmp_path)


PICKLE_SUFFIXES = {".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".npy", ".npz"}


def test_export_holds_no_pickle_anywhere(tmp_path, trained_like):
    out = export_retriever(trained_like, tmp_path / "exp", {})
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix in PICKLE_SUFFIXES]
    for path in files:
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{path} looks like a pickle / torch zip"
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".md", ".txt"}


def _front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_front_matter_records_model_and_training(tmp_path, trained_like):
    meta = {"scoring_lm": "embedded:smollm2-135m-instruct", "held_out_cluster": "nli",
            "train_clusters": ["sentiment", "commonsense"], "trained": True}
    out = export_retriever(trained_like, tmp_path / "exp", meta)
    front = _front_matter((out / "README.md").read_text())
    assert front["library_name"] == "sentence-transformers"
    assert front["uprise"]["base_model"] == trained_like.config.base_model
    assert front["uprise"]["scoring_lm"] == "embedded:smollm2-135m-instruct"
    assert front["uprise"]["train_clusters"] == ["sentiment", "commonsense"]
    assert "evaluation" not in front["uprise"] and "model-index" not in front


def _method(value: float, cluster: str) -> dict:
    return {"tasks": {"t": value}, "clusters": {cluster: value}, "average": value}


def test_update_model_card_adds_evaluation_numbers(tmp_path, trained_like):
    from retriever import update_model_card

    out = export_retriever(trained_like, tmp_path / "exp", {"held_out_cluster": "nli"})
    report = {"tasks": {"rte": {"cluster": "nli", "metric": "accuracy", "n": 10}},
              "methods": {"zero_shot": _method(0.5, "nli"), "trained": _method(0.625, "nli")}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    update_model_card(out, tmp_path / "report.json")
    card = (out / "README.md").read_text()
    front = _front_matter(card)
    assert front["uprise"]["evaluation"]["methods"]["trained"] == {"average": 0.625,
                                                                   "clusters": {"nli": 0.625}}
    assert "## Evaluation" in card and "| trained | 62.5 | 62.5 |" in card
    (result,) = front["model-index"][0]["results"]
    assert result["dataset"]["config"] == "nli"
    assert {m["name"].split()[0]: m["value"] for m in result["metrics"]} == {"zero_shot": 50.0,
                                                                            "trained": 62.5}
    multi = {"clusters": {"nli": report, "sentiment": {
        "methods": {"trained": _method(0.75, "sentiment")}}}, "summary": {}}
    update_model_card(out, multi)
    trained = _front_matter((out / "README.md").read_text())["uprise"]["evaluation"]["methods"]
    assert trained["trained"] == {"average": 0.6875,
                                  "clusters": {"nli": 0.625, "sentiment": 0.75}}
    with pytest.raises(ValueError, match=r"keys \['oops'\]; expected an evaluation report"):
        update_model_card(out, {"oops": 1})
