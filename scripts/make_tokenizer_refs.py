#!/usr/bin/env python3
"""Write the tokenizer reference ids under test/data/tokenizer/.

The references come from the Hugging Face `tokenizers` package (PyPI),
loading the same tokenizer.json the library loads:

    ids     = Tokenizer.from_file(json).encode(text).ids
    decoded = Tokenizer.decode(ids, skip_special_tokens=False)

so CI needs no Python.  Output:

  gpt-neox-20b.json.xz   copy of ../shared/data/tokenizers/gpt-neox-20b.json.xz
  refs.bin.xz            every reference record (format below)

refs.bin (little endian) is
  b"LMTOKREF" u32 version(=1) u32 n_records, then per record
  u32 name_len, name (UTF-8)
  u32 flags      bit0: text is NOT valid UTF-8; the reference ids are those
                       of text.decode("utf-8", "replace") (U+FFFD for each
                       maximal invalid subpart, the rule the library follows)
                 bit1: text not embedded: it is the whole file
                       <shared>/data/text/<name> (xz), text_len its size,
                       copied to test/data/tokenizer/books/<name>.xz
                 bit2: the decode equals the text (not stored again)
  u64 text_len, text bytes (absent with bit1)
  u64 n_ids, n_ids x u32
  u64 dec_len, decoded bytes (UTF-8 of the reference decode; absent with
                 bit2, dec_len is then text_len)

Records: an excerpt (start and middle) of every shared book, one whole book
(external), a Unicode stress text, the Basic Multilingual Plane swept code
point by code point in three contexts, long runs (BPE over one 100k-byte
word), random valid UTF-8 strings and random invalid byte strings.

The decode the library returns is raw bytes; tokenizers returns
String::from_utf8_lossy of the same bytes, so tests compare after the same
repair (the two differ only where ids end mid-character).

Variants: small byte-level BPEs trained here with tokenizers' BpeTrainer
(600 ids, on the start of Moby-Dick) and edited to reach the options the
GPT-NeoX file leaves at one value: tiny-<v>.json plus refs-tiny-<v>.bin.xz
  a  merges as "a b" strings, add_prefix_space, NFC, added tokens that
     overlap (leftmost-longest), contain spaces, need NFC to match
     (normalized true) or equal a vocabulary entry
  b  merges as pairs, no normalizer, ignore_merges with a vocabulary entry
     no merge reaches
  c  unk_token with fuse_unk, bytes 0xF0-0xFF absent from the vocabulary
     (with every merge that used them), ids with gaps, use_regex false
  d  as c with fuse_unk false, use_regex true, no normalizer

Usage: scripts/make_tokenizer_refs.py [--shared DIR] [--out DIR]
       scripts/make_tokenizer_refs.py --sweep-all FILE   (every code point;
       a one-off check, too large to commit, see test/test_tokenizer.c)
"""
import argparse
import lzma
import os
import random
import shutil
import struct
import sys

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BOOKS_TRAIN = ["austen-northanger-abbey", "austen-persuasion", "austen-pride-and-prejudice",
               "austen-sense-and-sensibility", "bible-kjv", "bible-web", "brown-corpus",
               "fortunes", "jargon-file", "devils-dictionary", "sotu-1790-1999"]
BOOKS_EVAL = ["austen-mansfield-park", "melville-moby-dick"]
WHOLE_BOOK = "eval/austen-mansfield-park.txt"
EXCERPT = 24 * 1024


def stress_text():
    """Hand-written text touching every branch of the pipeline."""
    parts = [
        # contractions (the regex's first alternatives), upper case, curly quotes
        "I'm sure you'll see they've said it's what we'd do, she's 're 've 'm 'll 'd 's 't",
        "IT'S WE'LL THEY'D 'S 'T ''s '''t '  's don’t can’t l'homme aujourd'hui",
        # digits: runs, mixed with letters, Unicode Nd/Nl/No
        "0 12 345 6789 0123456789012345678901234567890 3.14159 1,000,000 0x1F 1e-9 v2.0.1",
        "٠١٢٣٤٥٦٧٨٩ ۰۱۲ ०१२३ ０１２３ ²³¹ ½ ¾ Ⅻ ⅻ ① ⑳ 𝟎𝟏𝟐 〇 ",
        # whitespace of every kind, runs, at ends
        "tab\there\t\t\tthree\n\nnewlines\r\nCRLF\x0bVT\x0cFF end   ",
        "   leading spaces", "a" + " " * 2 + "b" + " " * 3 + "c" + " " * 23 + "d" + " " * 24 + "e",
        "x" + " " * 25 + "y" + " " * 49 + "z" + " " * 100 + "\n" + "\t" * 40 + "w",
        " \n \n\n  \t \u00a0 \u2003 \u3000 \u2028 \u2029 \u0085 \u180e \u200b \ufeff \u202f \u205f \u1680",
        "nbsp\u00a0between\u2009thin\u200ahair\u3000ideographic",
        # control characters and NUL
        "ctrl:\x00\x01\x02\x03\x07\x08\x1b[0m\x1f\x7f\x80\x9f end\x00",
        "\x00\x00\x00 nul run \x00",
        # combining marks, NFC composition and reordering, Hangul
        "e\u0301 a\u0300 o\u0308 n\u0303 c\u0327 A\u030a \u212b \u2126 q\u0307\u0323 s\u0323\u0307",
        "u\u0308\u0301 \u1e9b\u0323 Z\u0335\u0327\u0301 a\u0301\u0301\u0301\u0301\u0301",
        "\u1100\u1161\u11a8 \u1112\u1161\u11ab \ud55c\uad6d\uc5b4 \u3131\u314f",
        "caf\u00e9 cafe\u0301 na\u00efve re\u0301sume\u0301 \u00c5ngstr\u00f6m",
        "\u0915\u094d\u0937 \u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
        "Vi\u1ec7t Nam ti\u1ebfng Vi\u00ea\u0323t \u01a1\u0300",
        # CJK, kana, mixed scripts, fullwidth
        "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002",
        "\u6f22\u5b57abc\u304b\u306a123\u30ab\u30ca\uff21\uff22\uff23 \u3000\u300c\u5f15\u7528\u300d",
        "\U00020000\U0002a6d6\U00030000 \u9fff\u3400",
        "Hello\u4e16\u754cWorld \u041f\u0440\u0438\u0432\u0435\u0442 \u03b3\u03b5\u03b9\u03ac "
        "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
        # RTL, bidi controls
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0645\u0631\u062d\u0628\u0627 "
        "\u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u202eevil\u202c \u200f\u200e \u2067x\u2069",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 123 \u0639\u0631\u0628\u064a English \u05e2\u05d1\u05e8\u05d9\u05ea",
        # emoji: plain, skin tones, ZWJ sequences, flags, keycaps, VS16
        "\U0001f600\U0001f603 \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 "
        "\U0001f3f3\ufe0f\u200d\U0001f308 \U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5 1\ufe0f\u20e3 #\ufe0f\u20e3 "
        "\u2764\ufe0f \U0001f9d1\U0001f3fb\u200d\U0001f4bb",
        "emoji\U0001f680in\U0001f525words \U0001f4a9\U0001f4a9\U0001f4a9",
        # punctuation, symbols, code
        "def f(x):\n    return x**2 + 1  # comment\n\tif (a != b && c <= d) { y = \"s\"; }",
        "!!! ??? ... --- ___ *** ### @@ $$ %% ^^ && || ~~ `` ;; :: <<>> [[]] {{}} ((()))",
        "\u00a9\u00ae\u2122 \u20ac100 \u00a35 \u00a5 \u2190\u2192\u21d2 \u2200x\u2208\u211d \u222b\u2211\u221a "
        "\u00bf\u00a1 \u00ab\u00bb \u201c\u201d \u2018\u2019 \u2026 \u2014 \u2013",
        # special tokens: embedded, adjacent, partial, repeated
        "<|endoftext|>", "text<|endoftext|>more", " <|endoftext|> spaced ",
        "<|endoftext|><|padding|><|endoftext|>", "<|endoftext", "|endoftext|>",
        "<|endoftext|>\u0301 combining after special", "<<|endoftext|>>",
        "<|padding|>   <|padding|>" + " " * 30,
        # private use, noncharacters, replacement char, astral letters
        "\ue000\uf8ff \U000f0000 \ufffd\ufffe\uffff \U0010ffff \U0001d400\U0001d41a\U0001d7d8",
        # a long mixed word and a long run of one digit
        "Supercalifragilisticexpialidocious" * 4, "7" * 300, "\u00e9" * 200, "\U0001f600" * 50,
    ]
    return "\n".join(parts) + "\n"


def bmp_sweep(context):
    """Every BMP scalar value (surrogates skipped) in a context where its
    category changes the split: letters, numbers, white space and the rest
    each end up in different pre-tokens."""
    out = []
    for c in range(0x0, 0x10000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        if context == 0:
            out.append("a" + ch + "1 " + ch + ch + "x\n")
        elif context == 1:
            out.append(" " + ch + " b" + ch + "\t")
        else:
            out.append("'" + ch + "s 7" + ch + "  ")
    return "".join(out)


def random_valid(rng, n):
    pools = [
        (0x20, 0x7e, 40), (0x0, 0x1f, 3), (0x7f, 0xff, 6), (0x100, 0x24f, 4), (0x300, 0x36f, 5),
        (0x370, 0x3ff, 2), (0x400, 0x4ff, 3), (0x590, 0x6ff, 3), (0x900, 0x97f, 2),
        (0x1100, 0x11ff, 2), (0x2000, 0x206f, 4), (0x3000, 0x30ff, 3), (0x4e00, 0x9fff, 5),
        (0xac00, 0xd7a3, 2), (0xfe00, 0xfe0f, 1), (0xff00, 0xffef, 2), (0x1f300, 0x1faff, 5),
        (0x1d400, 0x1d7ff, 1), (0x20000, 0x2a6df, 1), (0xe0000, 0xe007f, 1),
    ]
    weights = [p[2] for p in pools]
    specials = [" ", "  ", "\t", "\n", "'s", "'ll", "<|endoftext|>", "<|padding|>", "\u200d", "0", " 12"]
    out = []
    for _ in range(n):
        k = rng.randint(0, 120)
        s = []
        for _ in range(k):
            if rng.random() < 0.15:
                s.append(rng.choice(specials))
                continue
            lo, hi, _w = rng.choices(pools, weights)[0]
            c = rng.randint(lo, hi)
            if 0xD800 <= c <= 0xDFFF:
                c = 0xFFFD
            s.append(chr(c))
        out.append("".join(s))
    return out


def mark_runs(rng):
    """Bases followed by runs of combining marks of many classes, short and
    long: NFC's canonical ordering (a stable sort by class) and the
    compositions it enables."""
    marks = list(range(0x300, 0x370)) + list(range(0x5B0, 0x5BE)) + list(range(0x64B, 0x653)) + \
        list(range(0x1DC0, 0x1DE0)) + list(range(0x20D0, 0x20F1)) + [0x3099, 0x309A, 0xE38, 0xE39, 0xF71, 0xF72]
    bases = "aeiouAEIOUncszgwyh\u03b1\u03b7\u03c9\u0391\u3046\u304b\u1100\u1161 1'"
    out = []
    for _ in range(300):
        k = rng.choice([1, 2, 3, 5, 8, 16, 17, 20, 40])
        out.append(rng.choice(bases) + "".join(chr(rng.choice(marks)) for _ in range(k)))
    cyc = [0x301, 0x323, 0x345, 0x5B0, 0x316, 0x35C, 0x334]
    out.append("a" + "".join(chr(cyc[i % len(cyc)]) for i in range(3000)) + "b")
    out.append("".join(chr(cyc[i % 2]) for i in range(2000)))
    return " ".join(out[:150]) + "".join(out[150:])


def random_invalid(rng, n):
    out = []
    frag = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xc2", b"\xe2\x82", b"\xed\xa0\x80",
            b"\xed\xbf\xbf", b"\xef\xbf", b"\xf0\x90\x80", b"\xf0\x80\x80\x80", b"\xf4\x90\x80\x80",
            b"\xf5\x80", b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff", b"\xe0\x80\x80", b"\xe0\x9f\xbf"]
    good = ["a", " ", "é", "€", "\U0001f600", "<|endoftext|>", "x y", "1"]
    while len(out) < n:
        parts = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(frag))
            elif r < 0.7:
                parts.append(rng.choice(good).encode())
            else:
                parts.append(bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 4))))
        b = b"".join(parts)
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            out.append(b)
    return out


def read_xz(path):
    with lzma.open(path, "rb") as f:
        return f.read()


def cut_utf8(b, start, size):
    """b[start:start+size] moved to code point boundaries."""
    while start < len(b) and (b[start] & 0xC0) == 0x80:
        start += 1
    end = min(len(b), start + size)
    while end < len(b) and (b[end] & 0xC0) == 0x80:
        end -= 1
    return b[start:end]


class Writer:
    def __init__(self, tok):
        self.tok = tok
        self.records = []
        self.stats = []

    def add(self, name, data, flags=0, embed=True):
        if flags & 1:
            text = data.decode("utf-8", "replace")
        else:
            text = data.decode("utf-8")
        ids = self.tok.encode(text).ids
        dec = self.tok.decode(ids, skip_special_tokens=False).encode("utf-8")
        if dec == data:
            flags |= 4
        rec = struct.pack("<I", len(name.encode())) + name.encode() + struct.pack("<I", flags)
        rec += struct.pack("<Q", len(data))
        if embed:
            rec += data
        rec += struct.pack("<Q", len(ids)) + struct.pack("<%dI" % len(ids), *ids)
        rec += struct.pack("<Q", len(dec))
        if not flags & 4:
            rec += dec
        self.records.append(rec)
        self.stats.append((name, len(data), len(ids)))

    def write(self, path):
        blob = b"LMTOKREF" + struct.pack("<II", 1, len(self.records)) + b"".join(self.records)
        with lzma.open(path, "wb", preset=9 | lzma.PRESET_EXTREME) as f:
            f.write(blob)
        return len(blob)


def train_tiny():
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             special_tokens=["<unk>"], show_progress=False)
    return tok, tr


def added(content, id_, special=False, normalized=None):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": (not special) if normalized is None else normalized, "special": special}


def tiny_variants(base):
    """Edited copies of the trained tokenizer.json (a dict)."""
    import copy
    out = {}
    v = base["model"]["vocab"]
    n = len(v)
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

    a = copy.deepcopy(base)
    a["model"]["merges"] = ["%s %s" % tuple(m) for m in base["model"]["merges"]]
    a["pre_tokenizer"] = dict(bl, add_prefix_space=True)
    a["added_tokens"] += [added("<|sp|>", n, special=True), added("<|sp|>x", n + 1, normalized=False),
                          added("sp|>", n + 2, normalized=False), added("na\u00efve", n + 3),
                          added("ab c", n + 4), added("\u00e9", v["\u00e9"])]
    out["a"] = a

    b = copy.deepcopy(base)
    b["normalizer"] = None
    b["model"]["ignore_merges"] = True
    b["model"]["vocab"]["qzx"] = n
    b["added_tokens"] += [added("<|sp|>", n + 1, special=True)]
    out["b"] = b

    for name, fuse, regex, nfc in (("c", True, False, True), ("d", False, True, False)):
        c = copy.deepcopy(base)
        gone = {chr(cp) for cp in range(0xF0, 0x100)}
        c["model"]["vocab"] = {k: i for k, i in base["model"]["vocab"].items()
                               if not any(ch in gone for ch in k) and i % 97 != 50}
        keep = c["model"]["vocab"]
        c["model"]["merges"] = [m for m in base["model"]["merges"]
                                if m[0] in keep and m[1] in keep and m[0] + m[1] in keep]
        c["model"]["unk_token"] = "<unk>"
        c["model"]["fuse_unk"] = fuse
        c["pre_tokenizer"] = dict(bl, use_regex=regex)
        if not nfc:
            c["normalizer"] = None
        out[name] = c
    return out


def tiny_texts(rng):
    t = [stress_text(), "qzx qzx qzxqzx Qzx", "<|sp|>x<|sp|>sp|><|sp|>sp|>x <|sp|", "na\u00efve nai\u0308ve naive",
         "ab c ab  c abc ab\u0301 c", "\u00e9 e\u0301 \u00e9\u00e9", "\u00fe\u00ff\u00f0 \U0001f600\U0001f600x"]
    return [s.encode() for s in t + random_valid(rng, 120)], random_invalid(rng, 40)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "test", "data", "tokenizer"))
    ap.add_argument("--sweep-all", metavar="FILE",
                    help="write every code point's reference (text + ids) to FILE and exit")
    args = ap.parse_args()

    src_json = os.path.join(args.shared, "data", "tokenizers", "gpt-neox-20b.json.xz")
    json_text = read_xz(src_json)
    tok = Tokenizer.from_str(json_text.decode())

    if args.sweep_all:
        w = Writer(tok)
        for lo in range(0, 0x110000, 0x10000):
            cps = [c for c in range(lo, lo + 0x10000) if not 0xD800 <= c <= 0xDFFF]
            text = "".join("a" + chr(c) + "1 " + chr(c) + chr(c) + "x\n" for c in cps)
            w.add("sweep-plane-%x" % (lo >> 16), text.encode())
        w.write(args.sweep_all)
        print("wrote", args.sweep_all)
        return 0

    os.makedirs(args.out, exist_ok=True)
    shutil.copyfile(src_json, os.path.join(args.out, "gpt-neox-20b.json.xz"))

    w = Writer(tok)
    for sub, books in (("train", BOOKS_TRAIN), ("eval", BOOKS_EVAL)):
        for book in books:
            data = read_xz(os.path.join(args.shared, "data", "text", sub, book + ".txt.xz"))
            w.add("%s/%s.txt@0" % (sub, book), cut_utf8(data, 0, EXCERPT))
            mid = len(data) // 2
            w.add("%s/%s.txt@mid" % (sub, book), cut_utf8(data, mid, EXCERPT))
    whole_xz = os.path.join(args.shared, "data", "text", WHOLE_BOOK + ".xz")
    whole = read_xz(whole_xz)
    os.makedirs(os.path.join(args.out, "books", os.path.dirname(WHOLE_BOOK)), exist_ok=True)
    shutil.copyfile(whole_xz, os.path.join(args.out, "books", WHOLE_BOOK + ".xz"))
    w.add(WHOLE_BOOK, whole, flags=2, embed=False)

    w.add("stress", stress_text().encode())
    w.add("mark-runs", mark_runs(random.Random(99)).encode())
    for ctx in range(3):
        w.add("bmp-sweep-%d" % ctx, bmp_sweep(ctx).encode())
    w.add("long-a", b"a" * 100000)
    w.add("long-digits", b"1234567890" * 10000)
    w.add("long-spaces", b" " * 100001)
    w.add("long-newlines-word", (b"\n" * 50000) + b"word" + (b" " * 50000))
    w.add("long-cjk", ("\u6f22" * 30000).encode())
    rng = random.Random(20240611)
    for i, s in enumerate(random_valid(rng, 400)):
        w.add("random-valid-%03d" % i, s.encode())
    for i, b in enumerate(random_invalid(rng, 200)):
        w.add("random-invalid-%03d" % i, b, flags=1)
    n = w.write(os.path.join(args.out, "refs.bin.xz"))
    print("records: %d, raw %d bytes, xz %d bytes" % (
        len(w.records), n, os.path.getsize(os.path.join(args.out, "refs.bin.xz"))))

    import json
    tiny, trainer = train_tiny()
    moby = read_xz(os.path.join(args.shared, "data", "text", "eval", "melville-moby-dick.txt.xz"))
    tiny.train_from_iterator([moby[:200000].decode()], trainer)
    base = json.loads(tiny.to_str())
    book = read_xz(os.path.join(args.shared, "data", "text", "train", "fortunes.txt.xz"))
    for name, d in tiny_variants(base).items():
        text = json.dumps(d, ensure_ascii=False, indent=1)
        path = os.path.join(args.out, "tiny-%s.json" % name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        tv = Tokenizer.from_str(text)
        ids_of = {a["content"]: tv.token_to_id(a["content"]) for a in d["added_tokens"]}
        for a in d["added_tokens"]:
            assert ids_of[a["content"]] == a["id"], (name, a)   # tokenizers keeps the file's ids
        vw = Writer(tv)
        rng = random.Random(7 + ord(name))
        valid, invalid = tiny_texts(rng)
        vw.add("fortunes@0", cut_utf8(book, 0, 8192))
        for i, b in enumerate(valid):
            vw.add("valid-%03d" % i, b)
        for i, b in enumerate(invalid):
            vw.add("invalid-%03d" % i, b, flags=1)
        vw.write(os.path.join(args.out, "refs-tiny-%s.bin.xz" % name))
        print("tiny-%s: %d records" % (name, len(vw.records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
