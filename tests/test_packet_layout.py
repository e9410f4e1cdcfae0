"""Which packets may be left out: the reference flags read from length-prefixed NAL headers.

H.264 (ITU-T H.264 section 7.3.1): one header byte, ``nal_ref_idc`` in bits 5-6, type in bits
0-4. HEVC (ITU-T H.265 section 7.3.1.2): two header bytes, type in bits 1-6 of the first,
``nuh_temporal_id_plus1`` in bits 0-2 of the second; even types 0..14 are sub-layer
non-reference pictures, which pictures of a *higher* temporal sub-layer may still refer to. The
hvcC box keeps ``lengthSizeMinusOne`` in the low bits of its byte 21 (ISO/IEC 14496-15 section
8.3.3.1; FFmpeg 8.0 writes it there in libavformat/hevc.c, ff_isom_write_hvcc).
"""

from __future__ import annotations

from lita_serve.preprocess.frame_decode import _shares
from lita_serve.preprocess.packets import PacketLayout, hevc_references, hvcc_length_size, is_reference


def _nal(header: bytes, size: int = 4) -> bytes:
    body = header + b"\x88\x84"  # a couple of payload bytes
    return len(body).to_bytes(size, "big") + body


def _hevc(kind: int, tid: int) -> bytes:
    return bytes([kind << 1, tid + 1])


def test_h264_non_reference_only_when_every_slice_says_so():
    ref_slice, nonref_slice, sei = bytes([0x41]), bytes([0x01]), bytes([0x06])
    assert not is_reference(_nal(sei) + _nal(nonref_slice), 4)
    assert is_reference(_nal(nonref_slice) + _nal(ref_slice), 4)
    assert is_reference(_nal(sei), 4)  # no slice at all: keep it
    assert is_reference(b"\x00\x00\x00\x09\x01", 4)  # a length past the end: keep it


def test_hevc_sub_layer_non_reference_only_in_the_top_sub_layer():
    idr, trail_r, trail_n = 19, 1, 0
    single_layer = [_nal(_hevc(idr, 0)), _nal(_hevc(trail_r, 0)), _nal(_hevc(trail_n, 0))]
    assert hevc_references(single_layer, 4) == [True, True, False]
    # With a second temporal sub-layer, a TRAIL_N of sub-layer 0 may be referred to from sub-layer 1.
    two_layers = [_nal(_hevc(idr, 0)), _nal(_hevc(trail_n, 0)), _nal(_hevc(trail_n, 1)), _nal(_hevc(trail_r, 1))]
    assert hevc_references(two_layers, 4) == [True, True, False, True]
    # A packet that cannot be read keeps every packet.
    assert hevc_references(single_layer + [b"\x00\x00\x00\x40\x02"], 4) == [True] * 4


def test_hvcc_length_size_from_byte_21():
    box = bytearray(23)
    box[0], box[21] = 1, 0xFC | 0x03
    assert hvcc_length_size("hevc", bytes(box)) == 4
    box[21] = 0xFC | 0x01
    assert hvcc_length_size("hevc", bytes(box)) == 2
    assert hvcc_length_size("hevc", b"\x00\x00\x00\x01\x40\x01") is None  # Annex B start codes
    assert hvcc_length_size("h264", bytes(box)) is None


class _Packet:
    """What PacketLayout reads of a demuxed packet: its bytes, pts, keyframe flag and size."""

    def __init__(self, data: bytes, pts: int, key: bool = False) -> None:
        self.data, self.pts, self.is_keyframe, self.size = data, pts, key, len(data)

    def __bytes__(self) -> bytes:
        return self.data


def _avcc(nal_type: int, ref_idc: int = 3) -> bytes:
    return _nal(bytes([(ref_idc << 5) | nal_type]))


def test_a_fresh_decoder_may_start_only_at_an_idr_that_opens_a_closed_gop():
    """avcC H.264: IDR (type 5) GOPs are independent; a non-IDR I frame (type 1 with the keyframe
    flag, x264's open-GOP keyframe) and an IDR whose GOP has a leading picture stay with the run before."""
    idr, p, b = _avcc(5), _avcc(1), _avcc(1, ref_idc=0)
    packets = [_Packet(idr, 0, True), _Packet(p, 2), _Packet(b, 1),          # GOP 0: I P b
               _Packet(idr, 3, True), _Packet(p, 4),                         # GOP 1: IDR, closed
               _Packet(p, 5, True), _Packet(p, 6),                           # GOP 2: non-IDR keyframe
               _Packet(idr, 8, True), _Packet(b, 7), _Packet(p, 9)]          # GOP 3: leading picture 7
    avcc_box = bytes([1, 0x64, 0, 0x1F, 0xFF])  # avcC, lengthSizeMinusOne = 3
    layout = PacketLayout.of(packets, "h264", avcc_box)
    assert layout.clean_key == [True, False, False, True, False, True, False, False, False, False]
    assert layout.fresh_start == [True, False, False, True, False, False, False, False, False, False]
    every = set(range(10))
    assert layout.needed_gops(every) == [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]]
    assert layout.independent_runs(every) == [[0, 1, 2], [3, 4, 5, 6, 7, 8, 9]]
    # Only display index 4 (packet 4) wanted: GOP 1 alone, its non-reference frames left out.
    assert layout.independent_runs({4}) == [[3, 4]]
    assert layout.needed_packets(every) == list(range(10))


def test_shares_keep_whole_runs_in_order_and_balance_bytes():
    sizes = [30, 10, 10, 30, 20]
    packets = [_Packet(b"x" * n, i) for i, n in enumerate(sizes)]
    runs = [[0], [1], [2], [3], [4]]
    assert _shares(runs, packets, 2) == [[0, 1, 2], [3, 4]]  # 50 + 50 bytes
    assert _shares(runs, packets, 3) == [[0, 1], [2, 3], [4]]  # 40 + 40 + 20
    assert _shares(runs, packets, 9) == [[0], [1, 2], [3], [4]]  # no share above the largest run
    assert _shares(runs, packets, 1) == [[0, 1, 2, 3, 4]]
    one_big = [_Packet(b"x" * n, i) for i, n in enumerate([10, 10, 10, 10, 40])]
    assert _shares(runs, one_big, 3) == [[0, 1, 2, 3], [4]]  # a third decoder would not finish sooner
