"""Streaming inverse STFT: overlap-add of frames fed in order, finished samples emitted at once.

The chunked engine (:mod:`sepcluster.separate.engine`) pushes each chunk's cross-faded
frames ``(..., bins, frames)`` complex as they come; :class:`StreamingISTFT` returns the
samples ``(..., samples)`` that no later frame can touch, so it holds only the last
``n_fft`` samples of the overlap-add (and the frames of one push step) whatever the track's
length. The result equals ``torch.istft(center=True, length=...)`` on all the frames at once.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

_ISTFT_FRAMES = 256  # frames per inverse-STFT step (bounds its temporary memory)


class StreamingISTFT:
    """Overlap-add inverse STFT fed frames in order; emits finished samples.

    ``push(Y complex (..., bins, m), t0)`` adds frames ``t0 .. t0+m-1`` and returns the
    samples ``(..., n)`` that no later frame touches; ``finish(length)`` returns the rest up to
    ``length`` samples in total. Same result as ``torch.istft(center=True, length=length)``
    on all the frames at once.
    """

    def __init__(self, n_fft: int, n_hop: int, device="cpu"):
        self.n_fft, self.n_hop = int(n_fft), int(n_hop)
        self.pad = self.n_fft // 2
        self.window = torch.hann_window(self.n_fft, device=device)
        self.acc: Optional[torch.Tensor] = None  # (lead, m) padded coordinates from acc_start
        self.env: Optional[torch.Tensor] = None
        self.acc_start = 0
        self.emitted = self.pad  # padded coordinate of the next sample to emit
        self.next_frame = 0
        self.total = 0  # samples emitted

    def _ola(self, frames: torch.Tensor) -> tuple:
        """Overlap-add of ``irfft(frames) * window``: ``(lead..., length)`` and the summed
        squared window ``(length,)``, ``length = (m - 1) * hop + n_fft``."""
        lead = frames.shape[:-2]
        m = frames.shape[-1]
        # (N, m, n_fft): frames along dim 1 so the inverse FFT runs on contiguous rows
        spec = frames.reshape(-1, frames.shape[-2], m).transpose(1, 2)
        wave = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window
        n = wave.shape[0]
        length = (m - 1) * self.n_hop + self.n_fft
        win2 = self.window ** 2
        if self.n_fft % self.n_hop == 0:
            # hop divides n_fft: sum R shifted copies of the frames' hop-long pieces
            R = self.n_fft // self.n_hop
            out = wave.new_zeros(n, length)
            env = win2.new_zeros(length)
            for r in range(R):
                piece = wave[:, :, r * self.n_hop:(r + 1) * self.n_hop].reshape(n, m * self.n_hop)
                out[:, r * self.n_hop:r * self.n_hop + m * self.n_hop] += piece
                env[r * self.n_hop:r * self.n_hop + m * self.n_hop] += \
                    win2[r * self.n_hop:(r + 1) * self.n_hop].repeat(m)
        else:
            out = F.fold(wave.transpose(1, 2), output_size=(1, length), kernel_size=(1, self.n_fft),
                         stride=(1, self.n_hop)).reshape(n, length)
            env = F.fold(win2[None, :, None].expand(1, self.n_fft, m), output_size=(1, length),
                         kernel_size=(1, self.n_fft), stride=(1, self.n_hop)).reshape(length)
        return out.reshape(*lead, length), env

    def _add(self, frames: torch.Tensor, t0: int) -> None:
        if t0 != self.next_frame:
            raise AssertionError(f"frames out of order: got {t0}, expected {self.next_frame}")
        ola, env = self._ola(frames)
        start = t0 * self.n_hop
        end = start + ola.shape[-1]
        if self.acc is None:
            self.acc = ola.new_zeros(*ola.shape[:-1], 0)
            self.env = env.new_zeros(0)
            self.acc_start = start
        cur_end = self.acc_start + self.acc.shape[-1]
        if end > cur_end:
            grow = end - cur_end
            self.acc = torch.cat([self.acc, self.acc.new_zeros(*self.acc.shape[:-1], grow)], dim=-1)
            self.env = torch.cat([self.env, self.env.new_zeros(grow)])
        off = start - self.acc_start
        self.acc[..., off:off + ola.shape[-1]] += ola
        self.env[off:off + ola.shape[-1]] += env
        self.next_frame = t0 + frames.shape[-1]

    def _take(self, upto: int) -> torch.Tensor:
        """Emit padded samples [emitted, upto) and drop them from the accumulator."""
        upto = max(upto, self.emitted)
        a = self.emitted - self.acc_start
        b = upto - self.acc_start
        have = self.acc.shape[-1]
        seg = self.acc[..., a:min(b, have)]
        env = self.env[a:min(b, have)]
        out = torch.where(env > 1e-11, seg / env.clamp_min(1e-11), torch.zeros_like(seg))
        if b > have:  # past the last frame: silence
            out = torch.cat([out, out.new_zeros(*out.shape[:-1], b - have)], dim=-1)
        # drop what was emitted, but nothing a later frame still adds to
        keep = max(0, min(b, have, self.next_frame * self.n_hop - self.acc_start))
        self.acc = self.acc[..., keep:].clone()
        self.env = self.env[keep:].clone()
        self.acc_start += keep
        self.emitted = upto
        self.total += out.shape[-1]
        return out

    def push(self, frames: torch.Tensor, t0: int) -> torch.Tensor:
        parts = []
        m = frames.shape[-1]
        for s in range(0, m, _ISTFT_FRAMES):
            sub = frames[..., s:s + _ISTFT_FRAMES]
            self._add(sub, t0 + s)
            parts.append(self._take((t0 + s + sub.shape[-1]) * self.n_hop))
        return torch.cat(parts, dim=-1)

    def finish(self, length: int) -> torch.Tensor:
        return self._take(self.pad + int(length))
