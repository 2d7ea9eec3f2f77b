"""The `instruction_mining_indicators` table layout, which `instruction_mining_fit` reads
(Instruction Mining, Cao et al. 2023)."""

import pyarrow as pa

SCALAR_INDICATORS = ("input_length", "output_length", "reward", "perplexity", "mtld", "knn")
INDICATORS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("input_length", pa.int32()),
        ("output_length", pa.int32()),
        ("reward", pa.float64()),
        ("perplexity", pa.float64()),
        ("mtld", pa.float64()),
        ("knn", pa.float64()),
        ("knn_pool", pa.int32()),
        ("extra", pa.map_(pa.string(), pa.float64())),
        ("missing", pa.list_(pa.string())),
    ]
)
