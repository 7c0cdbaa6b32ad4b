#!/usr/bin/env python3
"""Tokenizer throughput beside Hugging Face `tokenizers`, one thread each.

    bench/bench_tokenizer_hf.py BUILD_DIR [--shared DIR] [--reps N] [BOOK ...]

For each book (default: eval/melville-moby-dick and train/bible-kjv from
<shared>/data/text) the text and tokenizer.json are decompressed to a
temporary directory, BUILD_DIR/bench/bench_tokenizer runs on them, and
tokenizers encodes the same text (Tokenizer.encode of the whole string,
RAYON_NUM_THREADS=1, best of N CPU time (time.process_time, one thread
busy); and, as tokenizers is usually fed, the
lines through encode_batch on one thread).  Equality of the ids is
test_tokenizer's business (this book is one of its references).
"""
import argparse
import lzma
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("books", nargs="*", default=["eval/melville-moby-dick", "train/bible-kjv"])
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_intermixed_args()

    from tokenizers import Tokenizer
    import tokenizers

    exe = os.path.join(args.build_dir, "bench", "bench_tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        tj = os.path.join(tmp, "tokenizer.json")
        with open(tj, "wb") as f:
            f.write(lzma.open(os.path.join(args.shared, "data", "tokenizers", "gpt-neox-20b.json.xz")).read())
        t0 = time.process_time()
        hf = Tokenizer.from_file(tj)
        hf_load = time.process_time() - t0
        for book in args.books:
            data = lzma.open(os.path.join(args.shared, "data", "text", book + ".txt.xz")).read()
            path = os.path.join(tmp, "book.txt")
            with open(path, "wb") as f:
                f.write(data)
            print("== %s (%.2f MB)" % (book, len(data) / 1e6))
            out = subprocess.run([exe, tj, path, str(args.reps)], check=True, capture_output=True, text=True)
            sys.stdout.write(out.stdout)
            text = data.decode("utf-8")
            best = 1e30
            for _ in range(args.reps):
                t0 = time.process_time()
                enc = hf.encode(text)
                best = min(best, time.process_time() - t0)
            ids = enc.ids
            t0 = time.process_time()
            hf.decode(ids, skip_special_tokens=False)
            dec = time.process_time() - t0
            mb = len(data) / 1e6
            print("tokenizers %s  load %.3f s  %d tokens" % (tokenizers.__version__, hf_load, len(ids)))
            print("tokenizers %s  encode %.3f s = %.2f MB/s = %.2f Mtok/s   decode %.4f s = %.1f MB/s"
                  % (tokenizers.__version__, best, mb / best, len(ids) / 1e6 / best, dec, mb / dec))
            lines = text.splitlines(keepends=True)
            best = 1e30
            for _ in range(args.reps):
                t0 = time.process_time()
                encs = hf.encode_batch(lines)
                best = min(best, time.process_time() - t0)
            nt = sum(len(e.ids) for e in encs)
            print("tokenizers %s  encode_batch(lines) %.3f s = %.2f MB/s = %.2f Mtok/s (%d tokens)"
                  % (tokenizers.__version__, best, mb / best, nt / 1e6 / best, nt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
