"""eSpeak NG through ctypes, run as a script in a fresh process by kws_tf.data.synthetic.

Why a separate process: eSpeak NG keeps synthesis state between utterances (the same call
twice in one process gives different samples), but a fresh process replaying the same calls is
reproducible.  It also keeps a crash in the C library away from the caller, and this script
imports only numpy and espeakng-loader (which ships the library and its voice data).

    python _espeak.py OUT.npz < job.json
    job: {"utterances": [[text, voice, words_per_minute, pitch 0-100, pitch_range 0-100], ...]}
    OUT.npz: audio (all utterances, int16, concatenated), lengths, sample_rate
"""
import ctypes
import json
import sys

import numpy as np

_RETRIEVAL_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: return audio through the callback, blocking
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER
_END_PAUSE = 0x1000  # espeakENDPAUSE: close the utterance like the end of a sentence


class Espeak:
    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.libc = ctypes.CDLL(None)
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.sample_rate = lib.espeak_Initialize(_RETRIEVAL_SYNCHRONOUS, 0,
                                                 espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                         ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, n, events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, (n,)).copy())
        return 0  # 0 = continue

    def say(self, text: str, voice: str, wpm: int, pitch: int, pitch_range: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"no eSpeak NG voice {voice!r}")
        for param, value in ((_RATE, wpm), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        # Breath and voicing noise draw from eSpeak's generator and libc rand(): seed both.
        self.lib.espeak_ng_SetRandSeed(1)
        self.libc.srand(1)
        self._chunks = []
        data = text.encode() + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, 0, 0, _END_PAUSE, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed ({status}) for {text!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def main(out_path: str) -> None:
    job = json.load(sys.stdin)
    engine = Espeak()
    clips = [engine.say(*u) for u in job["utterances"]]
    np.savez(out_path, audio=np.concatenate(clips) if clips else np.zeros(0, np.int16),
             lengths=np.array([len(c) for c in clips], np.int64), sample_rate=engine.sample_rate)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # one line for the parent's error message
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
