"""Streaming files under TensorFlow Lite for Microcontrollers (TFLM), as a device runs them.

TFLM's interpreter (the ``tflite-micro`` package, extra ``micro``) has no signature runner:
inputs and outputs are positions in the subgraph, so the names of ``serving_default``
(``audio``, ``state_*``, ``probabilities``) are mapped to those positions from the file's
signature table.  Its memory is one arena of a size fixed before the first packet:
``arena_bytes`` finds the smallest one that loads and runs the file (every tensor the
interpreter plans, inputs and states included; the weights stay in flash, the file itself).
"""
from __future__ import annotations

import numpy as np

ARENA_LIMIT = 16 << 20  # no streaming file of the study's variants needs a tenth of this
ARENA_ALIGN = 16  # TFLM aligns its allocations to 16 bytes: finer steps find nothing new


def available() -> bool:
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return False
    return True


def signature_positions(content: bytes, signature: str = "serving_default") -> tuple:
    """({input name: position}, {output name: position}) of ``signature`` in subgraph 0."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.Model.GetRootAsModel(bytes(content), 0)
    for s in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(s)
        if sig.SignatureKey().decode() != signature:
            continue
        sub = model.Subgraphs(sig.SubgraphIndex())
        ins = [sub.Inputs(i) for i in range(sub.InputsLength())]
        outs = [sub.Outputs(i) for i in range(sub.OutputsLength())]
        return ({sig.Inputs(i).Name().decode(): ins.index(sig.Inputs(i).TensorIndex())
                 for i in range(sig.InputsLength())},
                {sig.Outputs(i).Name().decode(): outs.index(sig.Outputs(i).TensorIndex())
                 for i in range(sig.OutputsLength())})
    raise ValueError(f"the file has no signature {signature!r}")


class MicroStream:
    """A streaming .tflite file under TFLM: ``step(feeds) -> outputs`` by name, like
    ``inference.tflite.TFLiteModel`` (float32 at the interface; int8 files quantize inside).
    ``arena_size=None`` finds the smallest arena (``arena_bytes``)."""

    def __init__(self, content, arena_size: int | None = None):
        from tflite_micro import runtime

        self.content = bytes(content)
        self.inputs, self.outputs = signature_positions(self.content)
        self.arena_size = arena_bytes(self.content) if arena_size is None else int(arena_size)
        self.interpreter = runtime.Interpreter.from_bytes(self.content,
                                                          arena_size=self.arena_size)
        self.states = {n: tuple(int(d) for d in self.interpreter.get_input_details(i)["shape"])
                       for n, i in self.inputs.items() if n.startswith("state_")}

    def zero_states(self) -> dict:
        return {n: np.zeros(shape, np.float32) for n, shape in self.states.items()}

    def step(self, feeds: dict) -> dict:
        for name, position in self.inputs.items():
            self.interpreter.set_input(np.asarray(feeds[name], np.float32), position)
        self.interpreter.invoke()
        return {n: np.array(self.interpreter.get_output(i)) for n, i in self.outputs.items()}

    def run(self, packets) -> np.ndarray:
        """Probabilities after each packet of one stream (packets, hop) from zero states, each
        packet's states fed back as the next one's."""
        states, out = self.zero_states(), []
        for packet in np.asarray(packets, np.float32):
            result = self.step({"audio": packet[None], **states})
            states = {n: result[n] for n in states}
            out.append(np.array(result["probabilities"][0], np.float32))
        return np.stack(out)


def _runs(content: bytes, size: int, feeds: dict, positions: dict) -> bool:
    from tflite_micro import runtime

    try:
        interpreter = runtime.Interpreter.from_bytes(content, arena_size=size)
        for name, position in positions.items():
            interpreter.set_input(feeds[name], position)
        interpreter.invoke()
    except RuntimeError:  # TFLM: "failed to allocate tensors" (it also prints why, to stderr)
        return False
    return True


def arena_bytes(content, limit: int = ARENA_LIMIT) -> int:
    """The smallest TFLM arena (bytes, a multiple of 16) in which the file loads and runs a
    packet.  Allocation depends on sizes only, never on values, so one packet of zeros
    answers for every packet."""
    from tflite_micro import runtime

    from ..platform.quiet import native_output_muted

    content = bytes(content)
    positions, _ = signature_positions(content)
    probe = runtime.Interpreter.from_bytes(content, arena_size=limit)
    feeds = {n: np.zeros(probe.get_input_details(i)["shape"], np.float32)
             for n, i in positions.items()}
    if not _runs(content, limit, feeds, positions):
        raise ValueError(f"TFLM cannot run the file in a {limit}-byte arena")
    lo, hi = 0, limit // ARENA_ALIGN  # in units of 16 bytes: lo fails, hi runs
    with native_output_muted():  # each arena too small prints TFLM's complaint
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _runs(content, mid * ARENA_ALIGN, feeds, positions):
                hi = mid
            else:
                lo = mid
    return hi * ARENA_ALIGN


def card_entry(content) -> dict:
    """What the model card records for a microcontroller: arena, flash, the ops TFLM must
    register (a device's MicroMutableOpResolver lists exactly these)."""
    from ..inference.tflite import read_ops

    ops = sorted({op.name for op in read_ops(bytes(content))})
    return {"runtime": "TensorFlow Lite for Microcontrollers (tflite-micro)",
            "arena_bytes": arena_bytes(content), "flash_bytes": len(bytes(content)),
            "ops": ops}
