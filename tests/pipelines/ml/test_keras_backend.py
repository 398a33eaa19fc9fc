"""The Keras trainable with real Keras 3 on the torch backend (in a subprocess: the backend is
chosen once per process through KERAS_BACKEND)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, tempfile
from pathlib import Path
import numpy as np
from sigtune.pipelines.ml import (
    compute_metric, load_trainable, make_hep_dataset, make_trainable, split_random,
)

def builder(n_in, n_out, params):
    import keras
    return keras.Sequential([
        keras.Input((n_in,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(n_out, activation="sigmoid"),
    ])

d = make_hep_dataset(3000, seed=1)
s = split_random(d, val_fraction=0.25, test_fraction=0.25, seed=1)
seen = []
cb_epochs = []

def callbacks(params):  # user callbacks: keras.callbacks.Callback objects per training
    import keras
    return [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: cb_epochs.append(e + 1))]

t = make_trainable("keras", builder=builder, metrics=["auc"], callbacks=callbacks)
h = t.fit(s.train, s.val, {"max_epochs": 4, "learning_rate": 0.01, "batch_size": 256},
          report=lambda e, m: seen.append(e) or False)
p = t.predict(s.val.X)
pruned = make_trainable("keras", builder=builder).fit(
    s.train, s.val, {"max_epochs": 4}, report=lambda e, m: e == 2)
out = Path(tempfile.mkdtemp()) / "saved"
t.save(out)
back = load_trainable(out)
print(json.dumps({
    "seen": seen, "n_epochs": h.n_epochs, "auc": compute_metric("auc", s.val.y, p),
    "history_auc": h.metrics["val_auc"][-1], "reload_diff": float(np.max(np.abs(back.predict(s.val.X) - p))),
    "pruned": pruned.pruned, "pruned_epochs": pruned.n_epochs, "cb_epochs": cb_epochs,
}))
"""


def test_keras3_on_torch_backend_trains_reports_prunes_and_reloads() -> None:
    env = {**os.environ, "KERAS_BACKEND": "torch", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["seen"] == [1, 2, 3, 4] and res["n_epochs"] == 4
    assert res["cb_epochs"] == [1, 2, 3, 4]  # the user's Keras callback ran in every fit
    assert res["auc"] > 0.75
    assert abs(res["auc"] - res["history_auc"]) < 1e-6
    assert res["reload_diff"] < 1e-6
    assert res["pruned"] is True and res["pruned_epochs"] == 2
