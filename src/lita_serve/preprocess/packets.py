"""Which packets of a video stream must be decoded to get some of its frames exactly.

Sampling 100 frames of a long video needs few of its frames, but a decoder can only skip what
no later frame refers to. From one demux pass (no decoding) :class:`PacketLayout` knows, per
packet in decode order: its display index (rank of its pts), whether it starts a *clean* GOP (a
keyframe that no later packet displays before, so nothing after it refers back), and for
length-prefixed NAL units (H.264 ``avcC``, HEVC ``hvcC``: MP4, Matroska) whether it is a
reference frame: H.264 ``nal_ref_idc != 0``; HEVC anything but a sub-layer non-reference
picture (even NAL types 0..14) of the stream's highest temporal sub-layer, since only pictures
of a higher sub-layer could refer to one (ITU-T H.265 section 3.132 and 8.3.2).

:meth:`PacketLayout.needed_packets` then keeps, in each GOP that holds a wanted frame, the
reference packets up to the last wanted one plus the wanted packets themselves. Decoding those
gives bit-identical wanted frames. Other codecs and layouts keep every packet here; the
decoder then drops the non-reference frames it recognises itself
(:data:`lita_serve.preprocess.frame_decode.DECODER_DROPS_NONREF`).

For avcC H.264, :meth:`PacketLayout.header_only` follows the needed packets as one decoder sees
them through a model of the reference buffer (:mod:`lita_serve.preprocess.h264_refs`), which
says which frames each frame reads. A needed reference frame that no wanted frame reads,
directly or through other frames, goes to the decoder *header only*: it keeps the decoder's
reference buffer as a full decode leaves it, without decoding its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from lita_serve.preprocess.h264_refs import frame_references

_VCL_NAL_TYPES = frozenset(range(1, 6))  # H.264 coded slices (1..5, 5 = IDR)
_HEVC_SUBLAYER_NONREF = frozenset(range(0, 15, 2))  # TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N, RSV_VCL_N10..14


def avcc_length_size(codec_name: str, extradata: bytes | None) -> int | None:
    """NAL length-prefix size (1, 2 or 4 bytes) of H.264 in MP4's avcC format, else None."""
    if codec_name != "h264" or not extradata or len(extradata) < 5 or extradata[0] != 1:
        return None
    return (extradata[4] & 0x03) + 1


def hvcc_length_size(codec_name: str, extradata: bytes | None) -> int | None:
    """NAL length-prefix size of HEVC in the hvcC format (ISO/IEC 14496-15 section 8.3.3.1: byte
    21's low two bits are ``lengthSizeMinusOne``), else None (Annex B start codes, other codecs)."""
    if codec_name != "hevc" or not extradata or len(extradata) < 23 or extradata[0] != 1:
        return None
    return (extradata[21] & 0x03) + 1


def _nal_units(view: memoryview, length_size: int):
    """(first header byte, second header byte) of each length-prefixed NAL unit; None when the
    packet is not laid out as expected."""
    pos, out = 0, []
    while pos + length_size < len(view):
        n = int.from_bytes(view[pos: pos + length_size], "big")
        if n <= 0 or pos + length_size + n > len(view):
            return None
        second = view[pos + length_size + 1] if n > 1 else 0
        out.append((view[pos + length_size], second))
        pos += length_size + n
    return out


def is_reference(data: bytes | memoryview, length_size: int | None) -> bool:
    """False only when every coded slice in an avcC packet has ``nal_ref_idc == 0``."""
    if length_size is None:
        return True
    units = _nal_units(memoryview(data), length_size)
    if units is None:
        return True  # not what we expect: do not skip
    slices = [first for first, _ in units if (first & 0x1F) in _VCL_NAL_TYPES]
    return not slices or any(first & 0x60 for first in slices)


def hevc_slice_kinds(data: bytes | memoryview, length_size: int) -> tuple[bool, int] | None:
    """(every slice is a sub-layer non-reference picture, highest TemporalId of its slices) of an
    hvcC packet; None when it holds no slice or is not laid out as expected."""
    units = _nal_units(memoryview(data), length_size)
    if not units:
        return None
    kinds = [((first >> 1) & 0x3F, (second & 0x07) - 1) for first, second in units if (first >> 1) & 0x3F < 32]
    if not kinds:
        return None
    return all(kind in _HEVC_SUBLAYER_NONREF for kind, _ in kinds), max(tid for _, tid in kinds)


def hevc_references(packets: Sequence[bytes], length_size: int) -> list[bool]:
    """Per packet: False for a picture nothing can refer to (a sub-layer non-reference picture in
    the stream's highest temporal sub-layer), True otherwise and whenever a packet is unreadable."""
    kinds = [hevc_slice_kinds(p, length_size) for p in packets]
    if any(k is None for k in kinds):
        return [True] * len(packets)
    top = max(tid for _, tid in kinds)
    return [not (nonref and tid == top) for nonref, tid in kinds]


@dataclass
class PacketLayout:
    """Decode-order facts of a stream's packets (see the module docstring)."""

    display: list[int]  # display index of each packet (decode order)
    clean_key: list[bool]  # True where a clean GOP starts
    reference: list[bool]  # False for frames nothing refers to
    pts_to_index: dict[int, int]
    timestamps_usable: bool = True  # False: missing or repeated pts, decode order is display order
    fresh_start: list[bool] = field(default_factory=list)  # a decoder may start here and match a full decode
    avcc: tuple[int, bytes] | None = None  # H.264 in avcC: (NAL length-prefix size, extradata)
    packets: Sequence = field(default=(), repr=False)  # the demuxed packets, for header_only

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
        reference = _references(packets, codec_name, extradata) if usable else [True] * len(packets)
        keys = [bool(p.is_keyframe) and usable for p in packets]
        clean = _clean_keys(keys, pts)
        fresh = _fresh_starts(packets, clean, codec_name, extradata)
        size = avcc_length_size(codec_name, extradata)
        avcc = (size, bytes(extradata)) if usable and size else None
        return cls(display, clean, reference, {t: display[i] for i, t in enumerate(pts)}, usable, fresh, avcc,
                   packets)

    def display_index(self, pts: int | None) -> int:
        return self.pts_to_index.get(pts, -1) if pts is not None else -1

    def needed_packets(self, wanted: set[int]) -> list[int]:
        """Decode positions to feed the decoder, in order, for the ``wanted`` display indices."""
        return [pos for gop in self.needed_gops(wanted) for pos in gop]

    def needed_gops(self, wanted: set[int]) -> list[list[int]]:
        """:meth:`needed_packets` cut at the clean GOP starts: one list per GOP that holds a wanted frame."""
        n = len(self.display)
        starts = [i for i in range(n) if i == 0 or self.clean_key[i]]
        gops: list[list[int]] = []
        for lo, hi in zip(starts, starts[1:] + [n]):
            last = max((i for i in range(lo, hi) if self.display[i] in wanted), default=-1)
            if last < 0:
                continue  # no wanted frame in this GOP
            gops.append([i for i in range(lo, last + 1) if self.reference[i] or self.display[i] in wanted])
        return gops

    def header_only(self, wanted: set[int]) -> dict[int, bytes]:
        """Needed packets that no wanted frame reads, directly or through others (avcC H.264 only):
        reference frames that only have to pass through the decoder's reference buffer. Returns
        their decode positions, each with the packet's bytes cut after its slice headers.

        The model runs over the needed packets in decode order, as one decoder sees them (each
        run of a parallel decode starts at an IDR, where the model starts afresh too). Where it
        does not follow the stream exactly, nothing is cut.
        """
        if self.avcc is None:
            return {}
        size, extradata = self.avcc
        needed = self.needed_packets(wanted)
        if all(self.display[a] < self.display[b] for a, b in zip(needed, needed[1:])):
            return {}  # shown in decode order: no B-frames, every frame reads the one before
        data = [bytes(self.packets[pos]) for pos in needed]
        refs = frame_references(data, size, extradata)
        if refs is None:
            return {}
        read = {i for i, pos in enumerate(needed) if self.display[pos] in wanted}
        stack = list(read)
        while stack:
            for ref in refs.reads[stack.pop()]:
                if ref not in read:
                    read.add(ref)
                    stack.append(ref)
        return {pos: refs.header_only(data[i], i, size) for i, pos in enumerate(needed)
                if i not in read and refs.can_cut(i)}

    def independent_runs(self, wanted: set[int]) -> list[list[int]]:
        """:meth:`needed_gops` grouped so that each group can go to a decoder of its own.

        A new group starts at a GOP whose first packet is a :attr:`fresh_start`: a decoder that
        begins there knows nothing a full decode would know at that point (an H.264 IDR, an HEVC
        random-access picture without leading pictures, a VP8/VP9 keyframe all reset the decoder's
        references and, for VP8/VP9, its probabilities). Other GOPs stay with the group before.
        """
        runs: list[list[int]] = []
        for gop in self.needed_gops(wanted):
            if runs and not self.fresh_start[gop[0]]:
                runs[-1] += gop
            else:
                runs.append(list(gop))
        return runs


def _references(packets: Sequence, codec_name: str, extradata: bytes | None) -> list[bool]:
    """Which packets later frames may refer to, where the NAL headers say (else all)."""
    hevc_size = hvcc_length_size(codec_name, extradata)
    if hevc_size is not None:
        return hevc_references([bytes(p) for p in packets], hevc_size)
    size = avcc_length_size(codec_name, extradata)
    return [is_reference(bytes(p), size) for p in packets]


def _fresh_starts(packets: Sequence, clean: list[bool], codec_name: str, extradata: bytes | None) -> list[bool]:
    """Clean keyframes where a new decoder gives what a full decode gives (see ``independent_runs``).

    H.264 (avcC): the packet holds an IDR slice (NAL type 5), which empties the reference list
    (H.264 section 8.2.5.1). HEVC (hvcC): an IRAP picture (NAL types 16..21) that starts a clean
    GOP, so it has no leading pictures; no later picture refers past it (H.265 section 8.3.2).
    VP8 and VP9: a keyframe refreshes every reference buffer and resets the probability
    contexts. Everything else: nowhere, so one decoder takes the stream from start to end.
    """
    fresh = [False] * len(packets)
    avcc = avcc_length_size(codec_name, extradata)
    hvcc = hvcc_length_size(codec_name, extradata)
    for i, p in enumerate(packets):
        if not clean[i]:
            continue
        if codec_name in ("vp8", "vp9"):
            fresh[i] = True
        elif avcc is not None:
            fresh[i] = any(first & 0x1F == 5 for first, _ in _nal_units(memoryview(bytes(p)), avcc) or ())
        elif hvcc is not None:
            fresh[i] = any(16 <= (first >> 1) & 0x3F <= 21 for first, _ in _nal_units(memoryview(bytes(p)), hvcc) or ())
    return fresh


def _clean_keys(keys: list[bool], pts: list[int]) -> list[bool]:
    """Keyframes that no later packet (until the next keyframe) displays before (closed GOPs)."""
    clean = list(keys)
    positions = [i for i, k in enumerate(keys) if k]
    for a, b in zip(positions, positions[1:] + [len(keys)]):
        if any(pts[j] < pts[a] for j in range(a + 1, b)):
            clean[a] = False
    return clean
