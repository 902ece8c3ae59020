"""Write real item vectors to a file, to run ``item_source=[id,vectors]`` end to end: the frozen MiniLM embedding
(text_encoder=minilm) of every item's text of a dataset, as ``<out>.npy`` + ``<out>.ids`` (one raw item id per
line) and as ``<out>.parquet`` (columns item, vector). Items are the dataset's after preprocessing.

    python experiments/item_vectors_minilm.py dataset=ml-100k dataset.root=../shared/data \
        --out /work/helper-out/i16/sidefeat/ml100k_minilm
    recforge-train experiment=ml100k_sasrec item_embedder=multi 'item_source=[id,vectors]' \
        item_source.vectors.path=/work/helper-out/i16/sidefeat/ml100k_minilm.npy \
        item_source.vectors.ids_path=/work/helper-out/i16/sidefeat/ml100k_minilm.ids dataset.root=../shared/data
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from recforge.data.item_text import dataset_item_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output path without suffix (never inside the repository)")
    parser.add_argument("overrides", nargs="*", help="train.yaml overrides choosing the dataset, e.g. dataset=ml-100k")
    args = parser.parse_args()
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()
    item_ids = [str(raw) for raw in datamodule.load_sequences().item_ids[1:]]  # internal ids 1..N
    texts = dataset_item_texts(datamodule)
    vectors = instantiate(cfg.text_encoder).encode(texts).float().numpy()  # (N, D)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out.with_suffix(".npy"), vectors)
    out.with_suffix(".ids").write_text("\n".join(item_ids) + "\n")
    pq.write_table(pa.table({"item": item_ids, "vector": list(vectors)}), out.with_suffix(".parquet"))
    print(f"{len(item_ids)} vectors of dimension {vectors.shape[1]} written to {out}.npy/.ids/.parquet")


if __name__ == "__main__":
    main()
