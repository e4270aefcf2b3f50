"""UPRISE prompt retriever: bi-encoder, losses, Lightning training, export, FAISS index, baselines.

Public names are listed in `__all__` and loaded lazily on first use, so `import retriever`
stays light (torch, transformers, lightning, faiss and bm25s load only with the module that
needs them).
"""

from __future__ import annotations

from flan_data.lazy import lazy_exports

_EXPORTS = {
    "EMBEDDED_ENCODER": "retriever.model",
    "BiEncoder": "retriever.model",
    "BiEncoderConfig": "retriever.model",
    "resolve_encoder_path": "retriever.model",
    "info_nce": "retriever.losses",
    "distill_kl": "retriever.losses",
    "read_scores": "flan_data.score_folder",
    "RetrieverDataModule": "retriever.data",
    "RetrieverModule": "retriever.module",
    "export_retriever": "retriever.export",
    "load_retriever_encoder": "retriever.export",
    "INDEX_MANIFEST": "retriever.index",
    "build_index": "retriever.index",
    "PROMPTS_FILE": "retriever.index",
    "save_index": "retriever.index_dir",
    "load_index": "retriever.index_dir",
    "search": "retriever.index",
    "reconstruct": "retriever.index",
    "to_gpu": "retriever.index",
    "encode_prompts": "retriever.index_dir",
    "load_embeddings": "retriever.index_dir",
    "read_manifest": "retriever.index_manifest",
    "verify_files": "retriever.index_manifest",
    "check_index_class": "retriever.index_manifest",
    "index_pool": "retriever.index_dir",
    "add_prompts": "retriever.index_dir",
    "update_model_card": "retriever.index_dir",
    "Retriever": "retriever.baselines",
    "RandomRetriever": "retriever.baselines",
    "BM25Retriever": "retriever.baselines",
    "train_retriever": "retriever.cli",
    "TrainSettings": "retriever.settings",
    "train_main": "retriever.cli",
    "index_main": "retriever.cli",
    "mine_main": "retriever.cli",
    "mine_round": "retriever.mining",
    "build_training_examples": "retriever.labels",
    "TrainingExample": "retriever.labels",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
