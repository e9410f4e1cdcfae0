"""Which earlier frames each H.264 frame may read, from its slice headers and a model of the DPB.

A P or B slice predicts only from the pictures in its reference lists, and only from the first
``num_ref_idx_lX_active`` entries of each. The lists follow from the slice header and the
decoded picture buffer (DPB) the headers before it build up (ITU-T H.264 section 8.2.4):
frame numbers and picture order counts, the sliding window or the adaptive marking commands,
and the list modifications. Encoders often leave frames out of every list that matters: x264's
fast presets (``ref=1`` with a B-pyramid) point every P-frame past the B-reference before it, so
that reference serves only the B-frames of its own mini-GOP.

:func:`frame_references` models that buffer over a run of packets as one decoder receives them
(no decoding, the headers only) and returns, per packet, the packets whose pixels or motion the
packet's slices may use. A reference frame that no needed frame reads still has to pass through
the decoder, since its header moves the DPB (frame numbers, order counts, marking) for every
later list; but its slice data need not be decoded. :meth:`FrameReferences.header_only` cuts
each slice of such a packet right after its header: the decoder then files the picture exactly
as a full decode does, without decoding its macroblocks (with FFmpeg's error concealment off,
``ec=0``, it does not fill them either).

Only CABAC pictures are cut. With CAVLC, FFmpeg 8.0 (PyAV 18) was seen to decode later B-frames
a few pixels differently once an earlier picture had been cut a few bytes into its slice data;
CABAC streams stayed exact wherever the cut fell (2 to 300 bytes past the header, tested).

Only what is modelled exactly is claimed: progressive frames (no field pictures), picture order
count types 0 and 2, short-term references with the sliding window or marking operation 1,
one picture per packet, no slice groups, SP/SI slices, redundant pictures or MVC/SVC units.
Anything else returns ``None`` and the caller keeps every reference frame.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
_SLICE_P, _SLICE_B, _SLICE_I = 0, 1, 2
_MARGIN_BYTES = 2  # slice data kept after the header: the header parses whole, the data fails at once


class Unsupported(Exception):
    """The stream uses something this model does not follow exactly."""


class _Bits:
    """MSB-first reader over an RBSP (emulation prevention bytes removed), held as a string of bits."""

    def __init__(self, data: bytes) -> None:
        self.bits, self.pos = bin(int.from_bytes(b"\x01" + data, "big"))[3:], 0  # the 0x01 keeps leading zeros

    def u(self, n: int) -> int:
        end = self.pos + n
        if end > len(self.bits):
            raise _Short()
        value = int(self.bits[self.pos:end], 2) if n else 0
        self.pos = end
        return value

    def ue(self) -> int:
        one = self.bits.find("1", self.pos)
        if one < 0:
            raise _Short()
        zeros = one - self.pos
        if zeros > 31:
            raise Unsupported("malformed Exp-Golomb code")
        end = one + zeros + 1
        if end > len(self.bits):
            raise _Short()
        self.pos = end
        return int(self.bits[one:end], 2) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


class _Short(Exception):
    """The bytes read so far end inside the header."""


_EMULATION = re.compile(b"\x00\x00\x03")


def _rbsp(nal: bytes, limit: int | None = None) -> tuple[bytes, list[int]]:
    """The NAL payload after its header byte, up to ``limit`` bytes of ``nal``, with emulation
    prevention bytes removed; and the offsets in ``nal`` of the bytes removed (to map an RBSP
    position back to the escaped bytes)."""
    head = nal[:len(nal) if limit is None else limit]
    removed = [m.end() - 1 for m in _EMULATION.finditer(head, 1)]
    return head[1:].replace(b"\x00\x00\x03", b"\x00\x00") if removed else head[1:], removed


@dataclass
class _Sps:
    chroma_array_type: int
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    max_num_ref_frames: int
    frame_mbs_only: bool
    separate_colour_plane: bool


@dataclass
class _Pps:
    sps_id: int
    entropy_cabac: bool
    bottom_field_pic_order_present: bool
    num_ref_idx_default: tuple[int, int]
    weighted_pred: bool
    weighted_bipred_idc: int
    deblocking_control: bool
    redundant_pic_cnt_present: bool


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


def parse_sps(rbsp: bytes) -> tuple[int, _Sps]:
    """(seq_parameter_set_id, the fields the reference model needs) of an SPS (section 7.3.2.1.1)."""
    bits = _Bits(rbsp)
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    sps_id = bits.ue()
    chroma_format, separate = 1, False
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            separate = bool(bits.u(1))
        bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    log2_max_frame_num = bits.ue() + 4
    poc_type = bits.ue()
    log2_max_poc_lsb = 0
    if poc_type == 0:
        log2_max_poc_lsb = bits.ue() + 4
    elif poc_type == 1:
        raise Unsupported("picture order count type 1")
    max_refs = bits.ue()
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag: a gap is refused where it happens
    bits.ue(), bits.ue()  # picture size in macroblocks
    frame_mbs_only = bool(bits.u(1))
    return sps_id, _Sps(0 if separate else chroma_format, log2_max_frame_num, poc_type, log2_max_poc_lsb,
                        max_refs, frame_mbs_only, separate)


def parse_pps(rbsp: bytes) -> tuple[int, _Pps]:
    """(pic_parameter_set_id, the fields the reference model needs) of a PPS (section 7.3.2.2)."""
    bits = _Bits(rbsp)
    pps_id, sps_id = bits.ue(), bits.ue()
    cabac, bottom = bool(bits.u(1)), bool(bits.u(1))
    if bits.ue():
        raise Unsupported("slice groups")
    defaults = (bits.ue() + 1, bits.ue() + 1)
    weighted_pred, bipred = bool(bits.u(1)), bits.u(2)
    bits.se(), bits.se(), bits.se()  # pic_init_qp, pic_init_qs, chroma_qp_index_offset
    deblocking = bool(bits.u(1))
    bits.u(1)  # constrained_intra_pred_flag
    redundant = bool(bits.u(1))
    return pps_id, _Pps(sps_id, cabac, bottom, defaults, weighted_pred, bipred, deblocking, redundant)


@dataclass
class SliceHeader:
    """What one slice header says about references (section 7.3.3), and where it ends."""

    slice_type: int  # 0 P, 1 B, 2 I (slice_type % 5)
    idr: bool
    nal_ref_idc: int
    frame_num: int
    poc_lsb: int
    delta_poc_bottom: int
    num_ref_idx: tuple[int, int]
    modifications: tuple[list[tuple[int, int]], list[tuple[int, int]]]  # (idc, abs_diff_pic_num_minus1)
    mmco: list[tuple[int, int]] | None  # adaptive marking: (operation, difference_of_pic_nums_minus1)
    header_bits: int
    cabac: bool
    sps: _Sps = field(repr=False)


def _modifications(bits: _Bits) -> list[tuple[int, int]]:
    ops: list[tuple[int, int]] = []
    if not bits.u(1):
        return ops
    while True:
        idc = bits.ue()
        if idc == 3:
            return ops
        if idc not in (0, 1):
            raise Unsupported(f"reference list modification {idc} (long-term or view references)")
        ops.append((idc, bits.ue()))


def _skip_weights(bits: _Bits, count: int, chroma: bool) -> None:
    for _ in range(count):
        if bits.u(1):
            bits.se(), bits.se()
        if chroma and bits.u(1):
            for _ in range(4):
                bits.se()


def parse_slice_header(nal: bytes, spss: dict[int, _Sps], ppss: dict[int, _Pps]) -> tuple[SliceHeader, int]:
    """Parse a coded slice NAL unit (types 1 and 5) up to the start of its slice data; returns the
    header and how many bytes of ``nal`` hold it (escaped bytes included)."""
    for limit in (64, 1024, len(nal)):  # headers are short; long ones carry big weight tables
        rbsp, where = _rbsp(nal, limit)
        try:
            header = _slice_header(_Bits(rbsp), nal, spss, ppss)
        except _Short:
            if limit >= len(nal):
                raise Unsupported("slice header runs past the end of its NAL unit") from None
            continue
        escaped = (header.header_bits + 7) // 8 + 1  # bytes of ``nal`` the header occupies, unescaped
        for offset in where:
            if offset < escaped:
                escaped += 1
        return header, escaped

    raise AssertionError("unreachable")


def _slice_header(bits: _Bits, nal: bytes, spss: dict[int, _Sps], ppss: dict[int, _Pps]) -> SliceHeader:
    nal_ref_idc, nal_type = (nal[0] >> 5) & 3, nal[0] & 0x1F
    bits.ue()  # first_mb_in_slice
    slice_type = bits.ue() % 5
    if slice_type > _SLICE_I:
        raise Unsupported("SP/SI slices")
    pps = ppss.get(bits.ue())
    sps = spss.get(pps.sps_id) if pps is not None else None
    if pps is None or sps is None:
        raise Unsupported("slice refers to a parameter set not seen before it")
    if sps.separate_colour_plane:
        bits.u(2)
    frame_num = bits.u(sps.log2_max_frame_num)
    if not sps.frame_mbs_only and bits.u(1):
        raise Unsupported("field pictures")
    idr = nal_type == 5
    if idr:
        bits.ue()  # idr_pic_id
    poc_lsb = delta_bottom = 0
    if sps.poc_type == 0:
        poc_lsb = bits.u(sps.log2_max_poc_lsb)
        if pps.bottom_field_pic_order_present:
            delta_bottom = bits.se()
    if pps.redundant_pic_cnt_present and bits.ue():
        raise Unsupported("redundant pictures")
    if slice_type == _SLICE_B:
        bits.u(1)  # direct_spatial_mv_pred_flag
    counts = pps.num_ref_idx_default
    if slice_type != _SLICE_I and bits.u(1):  # num_ref_idx_active_override_flag
        counts = (bits.ue() + 1, bits.ue() + 1 if slice_type == _SLICE_B else counts[1])
    mods: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
    if slice_type != _SLICE_I:
        mods = (_modifications(bits), _modifications(bits) if slice_type == _SLICE_B else [])
    if (pps.weighted_pred and slice_type == _SLICE_P) or (pps.weighted_bipred_idc == 1 and slice_type == _SLICE_B):
        bits.ue()  # luma_log2_weight_denom
        chroma = sps.chroma_array_type != 0
        if chroma:
            bits.ue()
        _skip_weights(bits, counts[0], chroma)
        if slice_type == _SLICE_B:
            _skip_weights(bits, counts[1], chroma)
    mmco = None
    if nal_ref_idc:
        if idr:
            bits.u(1)  # no_output_of_prior_pics_flag
            if bits.u(1):
                raise Unsupported("long-term reference at an IDR")
        elif bits.u(1):  # adaptive_ref_pic_marking_mode_flag
            mmco = []
            while (op := bits.ue()) != 0:
                if op != 1:
                    raise Unsupported(f"memory management operation {op}")
                mmco.append((op, bits.ue()))
    if pps.entropy_cabac and slice_type != _SLICE_I:
        bits.ue()  # cabac_init_idc
    bits.se()  # slice_qp_delta
    if pps.deblocking_control and bits.ue() != 1:
        bits.se(), bits.se()
    return SliceHeader(slice_type, idr, nal_ref_idc, frame_num, poc_lsb, delta_bottom, counts, mods, mmco,
                       bits.pos, pps.entropy_cabac, sps)


@dataclass
class _Ref:
    position: int  # decode position of the packet
    frame_num: int
    poc: int


class _Dpb:
    """Short-term reference frames and picture order count state, as a conforming decoder keeps them."""

    def __init__(self) -> None:
        self.refs: list[_Ref] = []
        self.prev_ref_frame_num: int | None = None
        self.prev_poc_msb = self.prev_poc_lsb = 0  # POC type 0: of the previous reference picture
        self.prev_frame_num_offset = 0  # POC type 2: of the previous picture
        self.prev_frame_num = 0

    def poc(self, h: SliceHeader) -> int:
        """Section 8.2.1; updates the state that depends on the previous picture."""
        sps = h.sps
        if sps.poc_type == 0:
            if h.idr:
                self.prev_poc_msb = self.prev_poc_lsb = 0
            max_lsb = 1 << sps.log2_max_poc_lsb
            msb = self.prev_poc_msb
            if h.poc_lsb < self.prev_poc_lsb and self.prev_poc_lsb - h.poc_lsb >= max_lsb // 2:
                msb += max_lsb
            elif h.poc_lsb > self.prev_poc_lsb and h.poc_lsb - self.prev_poc_lsb > max_lsb // 2:
                msb -= max_lsb
            top = msb + h.poc_lsb
            if h.nal_ref_idc:
                self.prev_poc_msb, self.prev_poc_lsb = msb, h.poc_lsb
            return min(top, top + h.delta_poc_bottom)
        max_frame_num = 1 << sps.log2_max_frame_num
        if h.idr:
            offset = 0
        elif self.prev_frame_num > h.frame_num:
            offset = self.prev_frame_num_offset + max_frame_num
        else:
            offset = self.prev_frame_num_offset
        self.prev_frame_num_offset, self.prev_frame_num = offset, h.frame_num
        if h.idr:
            return 0
        return 2 * (offset + h.frame_num) - (0 if h.nal_ref_idc else 1)

    def pic_num(self, ref: _Ref, h: SliceHeader) -> int:
        """PicNum (= FrameNumWrap) of a short-term reference frame seen from the current slice."""
        return ref.frame_num - (1 << h.sps.log2_max_frame_num) if ref.frame_num > h.frame_num else ref.frame_num

    def lists(self, h: SliceHeader, poc: int) -> tuple[list[_Ref], list[_Ref]]:
        """Initial reference lists of a P or B slice (sections 8.2.4.2.1 and 8.2.4.2.3), full length."""
        if h.slice_type == _SLICE_P:
            return sorted(self.refs, key=lambda r: -self.pic_num(r, h)), []
        before = sorted((r for r in self.refs if r.poc < poc), key=lambda r: -r.poc)
        after = sorted((r for r in self.refs if r.poc > poc), key=lambda r: r.poc)
        return before + after, after + before

    def modify(self, initial: list[_Ref], ops: list[tuple[int, int]], h: SliceHeader, count: int) -> list[_Ref]:
        """Apply ``ref_pic_list_modification`` (section 8.2.4.3.1) and keep ``count`` entries."""
        out = list(initial[:count])
        max_pic_num = 1 << h.sps.log2_max_frame_num
        pred = h.frame_num
        for index, (idc, diff) in enumerate(ops):
            step = diff + 1
            no_wrap = pred - step if idc == 0 else pred + step
            if no_wrap < 0:
                no_wrap += max_pic_num
            elif no_wrap >= max_pic_num:
                no_wrap -= max_pic_num
            pred = no_wrap
            pic_num = no_wrap - max_pic_num if no_wrap > h.frame_num else no_wrap
            match = [r for r in self.refs if self.pic_num(r, h) == pic_num]
            if not match:
                raise Unsupported("reference list names a frame that is not in the buffer")
            out = out[:index] + [match[0]] + [r for r in out[index:] if r is not match[0]]
            out = out[:count]
        return out

    def mark(self, h: SliceHeader, position: int, poc: int) -> None:
        """Decoded reference picture marking (section 8.2.5) for the picture just decoded."""
        max_frame_num = 1 << h.sps.log2_max_frame_num
        if not h.idr and self.prev_ref_frame_num is not None and h.frame_num not in (
                self.prev_ref_frame_num, (self.prev_ref_frame_num + 1) % max_frame_num):
            raise Unsupported("gap in frame_num")
        if h.nal_ref_idc == 0:
            return
        if h.idr:
            self.refs = []
        elif h.mmco is not None:
            for _, diff in h.mmco:
                target = h.frame_num - (diff + 1)
                self.refs = [r for r in self.refs if self.pic_num(r, h) != target]
        elif len(self.refs) >= max(1, h.sps.max_num_ref_frames):
            oldest = min(self.refs, key=lambda r: self.pic_num(r, h))
            self.refs = [r for r in self.refs if r is not oldest]
        self.refs.append(_Ref(position, h.frame_num, poc))
        self.prev_ref_frame_num = h.frame_num


def nal_units(data: bytes, length_size: int) -> list[bytes]:
    """The length-prefixed NAL units of an avcC packet or extradata run."""
    out, pos = [], 0
    while pos + length_size <= len(data):
        n = int.from_bytes(data[pos:pos + length_size], "big")
        if n <= 0 or pos + length_size + n > len(data):
            raise Unsupported("packet is not laid out as length-prefixed NAL units")
        out.append(data[pos + length_size:pos + length_size + n])
        pos += length_size + n
    return out


def avcc_parameter_sets(extradata: bytes) -> list[bytes]:
    """SPS and PPS NAL units of an ``avcC`` box (ISO/IEC 14496-15 section 5.3.3.1)."""
    pos, out = 5, []
    for count_mask in (0x1F, 0xFF):
        if pos >= len(extradata):
            raise Unsupported("short avcC box")
        count = extradata[pos] & count_mask
        pos += 1
        for _ in range(count):
            n = int.from_bytes(extradata[pos:pos + 2], "big")
            out.append(extradata[pos + 2:pos + 2 + n])
            pos += 2 + n
    return out


@dataclass
class FrameReferences:
    """Per packet in decode order: the packets its slices may read, and its slices' header sizes."""

    reads: list[frozenset[int]]
    # Per packet: escaped bytes to keep of each slice NAL unit; None where the packet may not go in
    # header only (CAVLC slices: there, a partly decoded picture was seen to change later B-frames).
    header_bytes: list[list[int] | None]

    def can_cut(self, position: int) -> bool:
        return self.header_bytes[position] is not None

    def header_only(self, data: bytes, position: int, length_size: int) -> bytes:
        """The packet with each slice NAL unit cut after its header (other NAL units whole)."""
        sizes = self.header_bytes[position]
        assert sizes is not None, "only CABAC pictures go in header only"
        keep = iter(sizes)
        out = bytearray()
        for nal in nal_units(data, length_size):
            if nal[0] & 0x1F in (1, 5):
                nal = nal[:next(keep)]
            out += len(nal).to_bytes(length_size, "big") + nal
        return bytes(out)


def frame_references(packets: Sequence[bytes], length_size: int, extradata: bytes) -> FrameReferences | None:
    """Model the DPB over an avcC H.264 stream's packets (decode order); None where not exact."""
    try:
        return _frame_references(packets, length_size, extradata)
    except (Unsupported, _Short, IndexError, ValueError):
        return None
    except Exception:  # noqa: BLE001 - a damaged stream must not fail a decode that works without cuts
        log.debug("H.264 reference model gave up on a damaged stream", exc_info=True)
        return None


def _frame_references(packets: Sequence[bytes], length_size: int, extradata: bytes) -> FrameReferences:
    spss: dict[int, _Sps] = {}
    ppss: dict[int, _Pps] = {}

    def parameter_set(nal: bytes) -> None:
        kind = nal[0] & 0x1F
        if kind == 7:
            sps_id, sps = parse_sps(_rbsp(nal)[0])
            spss[sps_id] = sps
        elif kind == 8:
            pps_id, pps = parse_pps(_rbsp(nal)[0])
            ppss[pps_id] = pps

    for nal in avcc_parameter_sets(extradata):
        parameter_set(nal)
    dpb = _Dpb()
    reads: list[frozenset[int]] = []
    header_bytes: list[list[int] | None] = []
    for position, data in enumerate(packets):
        headers, sizes, cabac = [], [], True
        for nal in nal_units(bytes(data), length_size):
            kind = nal[0] & 0x1F
            if kind in (7, 8):
                parameter_set(nal)
            elif kind in (1, 5):
                h, size = parse_slice_header(nal, spss, ppss)
                headers.append(h)
                sizes.append(min(len(nal), size + _MARGIN_BYTES))
                cabac = cabac and h.cabac
            elif kind in (2, 3, 4):
                raise Unsupported("data-partitioned slices")
            elif kind in (14, 15, 20, 21):
                raise Unsupported("SVC/MVC NAL units")
        header_bytes.append(sizes if cabac and sizes else None)  # a packet without slices is not cut
        if not headers:
            reads.append(frozenset())
            continue
        first = headers[0]
        if any((h.frame_num, h.poc_lsb, h.idr, bool(h.nal_ref_idc)) != (first.frame_num, first.poc_lsb, first.idr,
                                                                       bool(first.nal_ref_idc)) for h in headers):
            raise Unsupported("more than one picture in a packet")
        if first.idr:
            dpb.refs = []
        poc = dpb.poc(first)
        used: set[int] = set()
        for h in headers:
            if h.slice_type == _SLICE_I:
                continue
            l0, l1 = dpb.lists(h, poc)
            if len(l0) < h.num_ref_idx[0] or (h.slice_type == _SLICE_B and len(l1) < h.num_ref_idx[1]):
                # Entries past the buffer are "no reference picture"; FFmpeg fills them with an
                # earlier slice's first entry, which this model does not follow.
                raise Unsupported("a reference list longer than the buffer")
            chosen = dpb.modify(l0, h.modifications[0], h, h.num_ref_idx[0])
            used.update(r.position for r in chosen)
            if h.slice_type == _SLICE_B:
                used.update(r.position for r in dpb.modify(l1, h.modifications[1], h, h.num_ref_idx[1]))
                if len(l1) > 1 and l0 == l1:  # list 1 swaps its first two entries (8.2.4.2.3)
                    swapped = [l1[1], l1[0], *l1[2:]]
                    used.update(r.position for r in dpb.modify(swapped, h.modifications[1], h, h.num_ref_idx[1]))
        reads.append(frozenset(used))
        dpb.mark(first, position, poc)
    return FrameReferences(reads, header_bytes)
