"""Which packets of a video stream must be decoded to get some of its frames exactly.

Sampling 100 frames of a long video needs few of its frames, but a decoder can only skip what
no later frame refers to. From one demux pass (no decoding) :class:`PacketLayout` knows, per
packet in decode order: its display index (rank of its pts), whether it starts a *clean* GOP (a
keyframe that no later packet displays before, so nothing after it refers back), and for
H.264 in MP4 (length-prefixed NAL units) whether it is a reference frame (``nal_ref_idc``).

:meth:`PacketLayout.needed_packets` then keeps, in each GOP that holds a wanted frame, the
reference packets up to the last wanted one plus the wanted packets themselves. Decoding those
gives bit-identical wanted frames; other codecs and layouts simply keep every reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

_VCL_NAL_TYPES = frozenset(range(1, 6))  # coded slices (1..5, 5 = IDR)


def avcc_length_size(codec_name: str, extradata: bytes | None) -> int | None:
    """NAL length-prefix size (1, 2 or 4 bytes) of H.264 in MP4's avcC format, else None."""
    if codec_name != "h264" or not extradata or len(extradata) < 5 or extradata[0] != 1:
        return None
    return (extradata[4] & 0x03) + 1


def is_reference(data: bytes | memoryview, length_size: int | None) -> bool:
    """False only when every coded slice in an avcC packet has ``nal_ref_idc == 0``."""
    if length_size is None:
        return True
    view = memoryview(data)
    pos, seen_slice = 0, False
    while pos + length_size < len(view):
        n = int.from_bytes(view[pos: pos + length_size], "big")
        if n <= 0 or pos + length_size + n > len(view):
            return True  # not what we expect: do not skip
        header = view[pos + length_size]
        if (header & 0x1F) in _VCL_NAL_TYPES:
            seen_slice = True
            if header & 0x60:
                return True
        pos += length_size + n
    return not seen_slice


@dataclass
class PacketLayout:
    """Decode-order facts of a stream's packets (see the module docstring)."""

    display: list[int]  # display index of each packet (decode order)
    clean_key: list[bool]  # True where a clean GOP starts
    reference: list[bool]  # False for frames nothing refers to
    pts_to_index: dict[int, int]
    timestamps_usable: bool = True  # False: missing or repeated pts, decode order is display order

    @classmethod
    def of(cls, packets: Sequence, codec_name: str, extradata: bytes | None) -> "PacketLayout":
        pts = [p.pts for p in packets]
        if any(t is None for t in pts) or len(set(pts)) != len(pts):
            pts = list(range(len(packets)))  # no usable timestamps: decode order is display order
            usable = False
        else:
            usable = True
        order = sorted(range(len(pts)), key=pts.__getitem__)
        display = [0] * len(pts)
        for rank, pos in enumerate(order):
            display[pos] = rank
        size = avcc_length_size(codec_name, extradata) if usable else None
        reference = [is_reference(bytes(p), size) for p in packets]
        keys = [bool(p.is_keyframe) and usable for p in packets]
        return cls(display, _clean_keys(keys, pts), reference, {t: display[i] for i, t in enumerate(pts)}, usable)

    def display_index(self, pts: int | None) -> int:
        return self.pts_to_index.get(pts, -1) if pts is not None else -1

    def needed_packets(self, wanted: set[int]) -> list[int]:
        """Decode positions to feed the decoder, in order, for the ``wanted`` display indices."""
        n = len(self.display)
        starts = [i for i in range(n) if i == 0 or self.clean_key[i]]
        bounds = list(zip(starts, starts[1:] + [n]))
        needed: list[int] = []
        for lo, hi in bounds:
            last = max((i for i in range(lo, hi) if self.display[i] in wanted), default=-1)
            if last < 0:
                continue  # no wanted frame in this GOP
            needed += [i for i in range(lo, last + 1) if self.reference[i] or self.display[i] in wanted]
        return needed


def _clean_keys(keys: list[bool], pts: list[int]) -> list[bool]:
    """Keyframes that no later packet (until the next keyframe) displays before (closed GOPs)."""
    clean = list(keys)
    positions = [i for i, k in enumerate(keys) if k]
    for a, b in zip(positions, positions[1:] + [len(keys)]):
        if any(pts[j] < pts[a] for j in range(a + 1, b)):
            clean[a] = False
    return clean
