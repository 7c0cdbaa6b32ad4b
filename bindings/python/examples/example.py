"""Load a model, prefill, decode, classify channels after calibrating on a
few random windows, and run a LongMamba prefill.

    python3 example.py MODEL_DIR
"""
import random
import sys

import longmamba as lm


def argmax(row):
    row = list(row)
    return max(range(len(row)), key=row.__getitem__)


def main(model_dir):
    with lm.Model(model_dir, backend="cpu") as model:
        V = model.vocab_size
        print(model)
        rng = random.Random(0)
        prompt = [rng.randrange(V) for _ in range(16)]

        with model.session() as s:
            last = s.prefill(prompt)[-1]          # logits of the last position
            generated = []
            for _ in range(8):                    # greedy decoding
                tok = argmax(last)
                generated.append(tok)
                last = s.decode(tok)
            print("greedy continuation:", generated)

            # LongMamba: calibrate on a few random windows, classify channels.
            windows = [[rng.randrange(V) for _ in range(64)] for _ in range(4)]
            with model.calibrate(windows) as calib:
                mask, counts = calib.classify_channels(theta=1e-3)
                print("global channels per layer:", [int(c) for c in counts],
                      "of", calib.info.n_channels)
                long_prompt = [rng.randrange(V) for _ in range(256)]
                s.reset()
                s.set_longmamba(calib)            # filters prompts >= 1.5 x 64 tokens
                logits = s.prefill(long_prompt)[-1]
                print("longmamba prefill of %d tokens: next token %d" %
                      (len(long_prompt), argmax(logits)))
                s.set_vanilla()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: example.py MODEL_DIR")
    main(sys.argv[1])
