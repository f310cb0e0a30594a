"""tf.distribute in the fit path: two logical CPU devices, and a two-worker cluster on 127.0.0.1."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from kws_tf.data import open_decoded

# The fit in a fresh process (strategies must exist before TensorFlow runs anything).
FIT = textwrap.dedent("""
    import json, sys
    import keras
    sys.path.insert(0, TESTS)
    from conftest import tiny_variant
    from kws_tf.training import FitConfig, fit, load_training_data

    TINY = tiny_variant("gru1")
    CFG = dict(sample_rate=8000, epochs=3, batch_size=6, verbose=0, jit_compile=False,
               strategy=STRATEGY)

    def run(output, **kw):
        data = load_training_data(ROOT, 8000, cache_dir=CACHE, verbose=False)
        return fit(TINY, data, FitConfig(**CFG), output=output, **kw)
""")


def _script(root, cache, strategy, body, prelude=""):
    return (prelude + FIT.replace("STRATEGY", repr(strategy)).replace("ROOT", repr(str(root)))
            .replace("CACHE", repr(str(cache))).replace("TESTS", repr(str(REPO / "tests")))
            + textwrap.dedent(body))


def _python(script, env=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _result(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_checkpoints_and_resumes(tiny_root, tmp_path):
    cache = tmp_path / "cache"
    open_decoded(tiny_root, cache_dir=cache, verbose=False)
    prelude = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """)
    body = f"""
        from kws_tf.training.distribute import make_strategy
        full = run({str(tmp_path / 'a')!r})
        CFG["strategy"] = "none"
        single = run({str(tmp_path / 'one')!r})
        CFG["strategy"] = "mirrored"

        class Crash(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(self.model.optimizer.iterations.numpy()) == 6:  # mid epoch 2
                    raise KeyboardInterrupt

        try:
            run({str(tmp_path / 'b')!r}, callbacks=[Crash()])
        except KeyboardInterrupt:
            pass
        resumed = run({str(tmp_path / 'b')!r}, resume=True)
        print(json.dumps({{"replicas": make_strategy("mirrored").num_replicas_in_sync,
                          "full": full.history, "resumed": resumed.history,
                          "single": single.history}}))
    """
    r = _result(_python(_script(tiny_root, cache, "mirrored", body, prelude)))
    assert r["replicas"] == 2
    assert [h["epoch"] for h in r["resumed"]] == [1, 2, 3]
    # synchronized BatchNorm: a batch split over two devices trains like one device
    for a, b in zip(r["full"], r["single"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    for a, b in zip(r["full"], r["resumed"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["fit_config"]["strategy"] == "mirrored"
    assert (tmp_path / "b" / "model.keras").is_file()


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_cluster_on_localhost_trains_and_only_the_chief_writes(tiny_root, tmp_path):
    cache = tmp_path / "cache"
    open_decoded(tiny_root, cache_dir=cache, verbose=False)  # workers only open it
    out = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    body = f"""
        import os
        from kws_tf.training.distribute import is_chief, make_strategy
        strategy = make_strategy("multiworker")
        run_ = run({str(out)!r})
        print(json.dumps({{"chief": is_chief(strategy), "replicas": strategy.num_replicas_in_sync,
                          "history": run_.history, "metrics": sorted(run_.metrics)}}))
    """
    procs = []
    for i in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        procs.append(_python(_script(tiny_root, cache, "multiworker", body),
                             env={"TF_CONFIG": json.dumps(tf_config)}))
    results = [_result(p) for p in procs]
    assert [r["chief"] for r in results] == [True, False]
    assert all(r["replicas"] == 2 for r in results)
    # one model trained: both workers saw the same (all-reduced) losses
    for a, b in zip(results[0]["history"], results[1]["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert "testing" in results[0]["metrics"] and results[1]["metrics"] == []
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 3 and (out / "model.keras").is_file()
    assert json.loads((out / "metrics.json").read_text())["testing"]["clips"] == 9
