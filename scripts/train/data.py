"""Training data: bytes of the xz-compressed books, a held-out tail of each
file, random windows, and pass-key (needle) samples built on the device.

Split: the last `val_frac` of every train file is held out (never trained
on); it serves for the validation bits/byte and as pass-key filler. The
eval books (../shared/data/text/eval) are not read here.
"""
import glob
import lzma
import os

import numpy as np
import torch

NEEDLE = "The pass key is {k}. Remember it. {k} is the pass key."
QUESTION = "What is the pass key? The pass key is {k}"
# classic synthetic haystack, used for a small share of pass-key samples
GRASS = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
         "There and back again. ")
KEY_DIGITS = 5


def load_split(data_dir, val_frac=0.02, sep=b"\n\n"):
    """Returns (train_bytes, val_bytes, file_list) as np.uint8 arrays."""
    files = sorted(glob.glob(os.path.join(data_dir, "*.txt.xz")))
    if not files:
        raise FileNotFoundError(f"no *.txt.xz under {data_dir}")
    tr, va = [], []
    for f in files:
        with lzma.open(f, "rb") as fh:
            b = fh.read()
        cut = int(len(b) * (1.0 - val_frac))
        tr.append(b[:cut])
        va.append(b[cut:])
    train = np.frombuffer(sep.join(tr), dtype=np.uint8).copy()
    val = np.frombuffer(sep.join(va), dtype=np.uint8).copy()
    return train, val, [os.path.basename(f) for f in files]


def _enc(s):
    return torch.tensor(list(s.encode("ascii")), dtype=torch.uint8)


class PasskeyMaker:
    """Builds pass-key rows on a device: a window of filler (book bytes or
    the 'grass' haystack), the needle at a chosen depth, and the question +
    answer as the last bytes. All keys have KEY_DIGITS digits, so the byte
    layout of needle and question is fixed and only the digits change."""

    def __init__(self, device):
        ph = "#" * KEY_DIGITS
        n = NEEDLE.format(k=ph)
        q = QUESTION.format(k=ph)
        self.needle = _enc(" " + n + " ").to(device)
        self.question = _enc("\n" + q).to(device)
        self.n_dig = torch.tensor([i for i, c in enumerate(" " + n + " ") if c == "#"], device=device)
        self.q_dig = torch.tensor([i for i, c in enumerate("\n" + q) if c == "#"], device=device)
        self.grass = _enc(GRASS * 8).to(device)
        self.device = device
        # bytes of the answer region: the space after "is" and the digits
        self.answer_len = KEY_DIGITS + 1

    def keys(self, n, gen):
        k = torch.randint(10 ** (KEY_DIGITS - 1), 10 ** KEY_DIGITS, (n,), generator=gen, device=self.device)
        p = 10 ** torch.arange(KEY_DIGITS - 1, -1, -1, device=self.device)
        return k, (k[:, None] // p) % 10 + 48  # ascii digits

    def fill(self, win, depth, digits):
        """win: [n, T] uint8 filler (modified in place); depth in [0, 1]
        per row: needle start as a fraction of the room before the question.
        Returns win."""
        n, T = win.shape
        Ln, Lq = self.needle.numel(), self.question.numel()
        room = T - Lq - Ln
        if room < 0:
            raise ValueError("window too short for a pass key")
        pos = (depth * room).round().long().clamp(0, room)
        nd = self.needle.expand(n, Ln).clone()
        nd[:, self.n_dig] = digits.repeat(1, len(self.n_dig) // KEY_DIGITS).to(torch.uint8)
        idx = pos[:, None] + torch.arange(Ln, device=self.device)
        win.scatter_(1, idx, nd)
        qd = self.question.expand(n, Lq).clone()
        qd[:, self.q_dig] = digits.to(torch.uint8)
        win[:, T - Lq:] = qd
        return win

    def grass_filler(self, n, T, gen):
        g = self.grass
        reps = T // g.numel() + 2
        big = g.repeat(reps)
        off = torch.randint(0, len(GRASS), (n,), generator=gen, device=self.device)
        idx = off[:, None] + torch.arange(T, device=self.device)
        return big[idx]


class Batcher:
    """Training rows of L+1 bytes (x = w[:, :-1], y = w[:, 1:]), built on the
    CPU with NumPy and moved to `device`. Three kinds of rows:

    * plain: a random window of the training text;
    * single pass-key (pk_frac): filler, the needle, filler, then the question
      and answer as the last bytes (the evaluation format). The gap between
      the needle and the question is uniform in [0, G]; G grows
      geometrically from 64 bytes to the whole window as the run's progress
      goes from 0 to curriculum (curriculum = 0: always the whole window);
    * dense pass-key (dense_frac): back-to-back episodes "filler, needle,
      filler gap, question + answer" with fresh keys, gaps uniform in
      [0, Gd], Gd growing from 16 to 768 bytes on the same curriculum: many
      answers per row, each about the most recent needle.

    answer_mask marks the targets that are answer bytes (space + digits) and,
    with mask_copy, also the digits of the needle's second mention of the key
    ("Remember it. 68413 is ..."), a short-range copy that is the first rung
    of the curriculum."""

    def __init__(self, data_u8, L, device, seed, pk_frac=0.25, dense_frac=0.0, grass_frac=0.2,
                 curriculum=0.0, mask_copy=True):
        self.data = np.asarray(data_u8, dtype=np.uint8)
        self.L = L
        self.device = device
        self.rng = np.random.default_rng(seed)
        self.pk_frac, self.dense_frac, self.grass_frac = pk_frac, dense_frac, grass_frac
        self.curriculum = curriculum
        self.progress = 0.0
        nd = " " + NEEDLE.format(k="#" * KEY_DIGITS) + " "
        second = nd.index("#" * KEY_DIGITS, nd.index("#") + KEY_DIGITS)
        self.copy_off = list(range(second, second + KEY_DIGITS)) if mask_copy else []
        self.grass = np.frombuffer((GRASS * (L // len(GRASS) + 3)).encode("ascii"), dtype=np.uint8)

    def _ramp(self, lo, hi):
        if self.curriculum <= 0:
            return hi
        f = min(1.0, self.progress / self.curriculum)
        return int(round(lo * (hi / lo) ** f))

    def _filler(self, n):
        st = int(self.rng.integers(0, self.data.size - n))
        return self.data[st:st + n]

    def _key(self):
        return str(int(self.rng.integers(10 ** (KEY_DIGITS - 1), 10 ** KEY_DIGITS)))

    def _single(self, T, grass):
        if grass:
            off = int(self.rng.integers(0, len(GRASS)))
            w = self.grass[off:off + T].copy()
        else:
            w = self._filler(T).copy()
        k = self._key()
        nd = np.frombuffer((" " + NEEDLE.format(k=k) + " ").encode("ascii"), dtype=np.uint8)
        q = np.frombuffer(("\n" + QUESTION.format(k=k)).encode("ascii"), dtype=np.uint8)
        room = T - q.size - nd.size
        gap = int(self.rng.integers(0, min(room, self._ramp(64, room)) + 1))
        pos = room - gap
        w[pos:pos + nd.size] = nd
        w[T - q.size:] = q
        return w, [pos + o for o in self.copy_off] + [T - KEY_DIGITS - 1 + i for i in range(KEY_DIGITS + 1)]

    def _dense(self, T):
        gmax = self._ramp(16, 768)
        parts, ans, n = [], [], 0
        while True:
            k = self._key()
            pre = self._filler(int(self.rng.integers(0, 33)))
            nd = (" " + NEEDLE.format(k=k) + " ").encode("ascii")
            mid = self._filler(int(self.rng.integers(0, gmax + 1)))
            q = ("\n" + QUESTION.format(k=k)).encode("ascii")
            seg = [pre.tobytes(), nd, mid.tobytes(), q, b"\n"]
            ln = sum(len(x) for x in seg)
            if n + ln > T:
                break
            a0 = n + ln - 1 - (KEY_DIGITS + 1)
            ans.extend(n + len(seg[0]) + o for o in self.copy_off)
            ans.extend(range(a0, a0 + KEY_DIGITS + 1))
            parts.extend(seg)
            n += ln
        w = np.frombuffer(b"".join(parts), dtype=np.uint8)
        w = np.concatenate([w, self._filler(T - w.size)])
        return w, ans

    def batch(self, bsz):
        T = self.L + 1
        n_pk = int(round(bsz * self.pk_frac))
        n_dn = int(round(bsz * self.dense_frac))
        n_gr = int(round(n_pk * self.grass_frac))
        rows = np.empty((bsz, T), dtype=np.uint8)
        mask = np.zeros((bsz, self.L), dtype=bool)
        for i in range(bsz):
            if i < n_pk:
                w, ans = self._single(T, grass=i < n_gr)
            elif i < n_pk + n_dn:
                w, ans = self._dense(T)
            else:
                w, ans = self._filler(T), []
            rows[i] = w
            if ans:
                mask[i, np.asarray(ans) - 1] = True   # target index = byte index - 1
        w = torch.from_numpy(rows).to(self.device, non_blocking=True).long()
        m = torch.from_numpy(mask).to(self.device, non_blocking=True)
        return w[:, :-1], w[:, 1:], m


def passkey_set(data_u8, L, n, seed, device, grass=False):
    """Deterministic pass-key prompts of exactly L bytes from `data_u8`
    (held-out text): depths evenly spread over [0, 1]. Returns
    (ids [n, L], answer [n, A]); the prompt is ids[:, :L-A] and the greedy
    continuation must equal the answer (space + digits)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    pk = PasskeyMaker(device)
    data = torch.as_tensor(data_u8).to(device)
    if grass:
        w = pk.grass_filler(n, L, gen)
    else:
        st = torch.randint(0, data.numel() - L, (n,), generator=gen, device=device)
        w = data[st[:, None] + torch.arange(L, device=device)]
    depth = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n
    _, dig = pk.keys(n, gen)
    pk.fill(w, depth, dig)
    A = pk.answer_len
    return w.long(), w[:, L - A:].long()
