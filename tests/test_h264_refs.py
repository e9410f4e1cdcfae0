"""The H.264 reference model: slice headers as FFmpeg reads them, the frames each frame reads, and
exact frames when the frames nothing wanted reads go to the decoder header only.

Files come from libx264 through the ffmpeg command line (FFmpeg's ``testsrc2`` pattern, not the
project's generator), in the settings that change what the model has to follow: x264's fast
presets (``ref=1``: every P-frame skips the B-reference before it with a list modification), a
strict B-pyramid, three slices per picture, MBAFF interlacing, CAVLC, three reference frames,
and no B-frames (picture order count type 2).

The reference for the header fields is FFmpeg's own parser: the ``trace_headers`` bitstream
filter (libavcodec/bsf/trace_headers.c over cbs_h264, FFmpeg 5.1 as Debian 12 ships it) prints
every syntax element with its bit position.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from test_media_matrix import _every_frame_then_pick
from videos import ffmpeg_binary

from lita_serve.preprocess.frame_decode import decode_pyav
from lita_serve.preprocess.h264_refs import (
    Unsupported, _rbsp, avcc_parameter_sets, frame_references, nal_units, parse_pps, parse_slice_header, parse_sps,
)
from lita_serve.preprocess.packets import PacketLayout, avcc_length_size
from lita_serve.preprocess.source import load_source

PYRAMID = "bframes=3:b-pyramid=normal:keyint=60"
VARIANTS = {
    "fast_pyramid": ("-preset", "veryfast", "-x264-params", PYRAMID),
    "strict_pyramid": ("-preset", "veryfast", "-x264-params", "bframes=3:b-pyramid=strict:keyint=60"),
    "three_slices": ("-preset", "veryfast", "-x264-params", f"slices=3:{PYRAMID}"),
    "mbaff": ("-preset", "veryfast", "-flags", "+ilme+ildct", "-x264-params", f"tff=1:{PYRAMID}"),
    "cavlc": ("-preset", "veryfast", "-x264-params", f"cabac=0:{PYRAMID}"),
    "three_refs": ("-preset", "veryfast", "-x264-params", f"ref=3:{PYRAMID}"),
    "no_b_frames": ("-preset", "veryfast", "-x264-params", "bframes=0:keyint=60"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    ffmpeg = ffmpeg_binary()
    folder = tmp_path_factory.mktemp("h264_refs")
    out = {}
    for name, args in VARIANTS.items():
        path = folder / f"{name}.mp4"
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=176x144:rate=30:duration=6", "-c:v", "libx264", "-pix_fmt", "yuv420p", *args,
                        str(path)], check=True, timeout=120)
        out[name] = path
    return out


def _packets(path: Path) -> tuple[list, bytes]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        return packets, bytes(stream.codec_context.extradata)


def _our_slices(path: Path) -> list[dict]:
    packets, extradata = _packets(path)
    spss, ppss = {}, {}
    for nal in avcc_parameter_sets(extradata):
        if nal[0] & 0x1F == 7:
            key, value = parse_sps(_rbsp(nal)[0])
            spss[key] = value
        else:
            key, value = parse_pps(_rbsp(nal)[0])
            ppss[key] = value
    slices = []
    for packet in packets:
        for nal in nal_units(bytes(packet), avcc_length_size("h264", extradata)):
            if nal[0] & 0x1F in (1, 5):
                h, _ = parse_slice_header(nal, spss, ppss)
                slices.append({
                    "nal_ref_idc": h.nal_ref_idc, "slice_type": h.slice_type, "frame_num": h.frame_num,
                    "pic_order_cnt_lsb": h.poc_lsb,
                    "modifications": [v for ops in h.modifications for op in ops for v in op],
                    "mmco": [v for op in (h.mmco or []) for v in op],
                    "header_end_bit": 8 + h.header_bits,
                })
    return slices


_FIELD = re.compile(r"^\[trace_headers @ [0-9a-fx]+\] (\d+)\s+(\w+(?:\[\d+\])*)\s+([01]+) = (-?\d+)$")


def _ffmpeg_slices(path: Path) -> list[dict]:
    """Every slice header as FFmpeg's trace_headers prints it."""
    trace = subprocess.run([ffmpeg_binary(), "-hide_banner", "-v", "verbose", "-i", str(path), "-c", "copy",
                            "-bsf:v", "trace_headers", "-f", "null", "-"], capture_output=True, text=True,
                           timeout=120).stderr
    nals: list[list[tuple[int, str, str, int]]] = []
    for line in trace.splitlines():
        m = _FIELD.match(line.strip())
        if not m:
            continue
        pos, name, bits, value = int(m[1]), m[2], m[3], int(m[4])
        if name == "forbidden_zero_bit":
            nals.append([])
        if nals:
            nals[-1].append((pos, name, bits, value))
    slices = []
    for fields in nals:
        values = {name: value for _, name, _, value in fields}
        if values.get("nal_unit_type") not in (1, 5):
            continue
        header = [f for f in fields if f[1] not in ("cabac_alignment_one_bit",)]
        last = max((f for f in header if f[1] in ("slice_qp_delta", "disable_deblocking_filter_idc",
                                                  "slice_alpha_c0_offset_div2", "slice_beta_offset_div2")),
                   key=lambda f: f[0])
        slices.append({
            "nal_ref_idc": values["nal_ref_idc"], "slice_type": values["slice_type"] % 5,
            "frame_num": values["frame_num"], "pic_order_cnt_lsb": values.get("pic_order_cnt_lsb", 0),
            "modifications": [v for _, n, _, v in fields
                              if n == "abs_diff_pic_num_minus1" or (n == "modification_of_pic_nums_idc" and v != 3)],
            "mmco": [v for _, n, _, v in fields
                     if n == "difference_of_pic_nums_minus1" or (n == "memory_management_control_operation" and v)],
            "header_end_bit": last[0] + len(last[2]),
        })
    return slices


@pytest.mark.parametrize("name", ["fast_pyramid", "three_slices", "mbaff", "cavlc", "no_b_frames"])
def test_slice_headers_read_as_ffmpeg_reads_them(clips, name):
    """Type, frame number, order count, list modifications, marking operations and where the header
    ends: the same for every slice of the file as FFmpeg's trace_headers prints them."""
    ours, theirs = _our_slices(clips[name]), _ffmpeg_slices(clips[name])
    assert len(ours) == len(theirs) > 100
    for n, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, (name, n)
    assert any(s["modifications"] for s in ours) == (name != "no_b_frames")
    assert any(s["mmco"] for s in ours) == (name != "no_b_frames")


def _layout(path: Path) -> tuple[PacketLayout, list[str]]:
    packets, extradata = _packets(path)
    kinds = []
    for packet in packets:
        nal = next(n for n in nal_units(bytes(packet), 4) if n[0] & 0x1F in (1, 5))
        kinds.append("IPB"[[2, 0, 1].index(_slice_type(nal))] + ("ref" if nal[0] & 0x60 else ""))
    return PacketLayout.of(packets, "h264", extradata), kinds


def _slice_type(nal: bytes) -> int:
    """slice_type % 5 from the two Exp-Golomb codes after the NAL header (no escapes this early)."""
    bits = "".join(f"{b:08b}" for b in nal[1:9])
    pos, values = 0, []
    for _ in range(2):
        zeros = len(bits[pos:]) - len(bits[pos:].lstrip("0"))
        values.append(int(bits[pos + zeros:pos + 2 * zeros + 1], 2) - 1)
        pos += 2 * zeros + 1
    return values[1] % 5


def test_fast_presets_point_p_frames_past_the_b_reference(clips):
    """x264 with one reference frame and a B-pyramid: each P-frame reads the I or P frame before
    it and nothing else; a B-reference is read only by the B-frames shown between its neighbours.
    With three reference frames, P-frames read B-references too, and nothing goes in header only."""
    layout, kinds = _layout(clips["fast_pyramid"])
    packets, extradata = _packets(clips["fast_pyramid"])
    reads = frame_references([bytes(p) for p in packets], 4, extradata).reads
    for pos, kind in enumerate(kinds):
        if kind.startswith("P"):
            (ref,) = reads[pos]
            assert kinds[ref][0] in "IP", (pos, kinds[ref])
        if kind == "Bref":
            readers = [p for p in range(len(kinds)) if pos in reads[p]]
            assert readers and all(kinds[p][0] == "B" for p in readers)
            assert all(abs(layout.display[p] - layout.display[pos]) < 4 for p in readers)
    samples = set(range(0, len(kinds), 7))
    assert len(layout.header_only(samples)) > 10
    assert set(layout.header_only(samples)) <= {p for p, k in enumerate(kinds) if k == "Bref"}

    layout3, kinds3 = _layout(clips["three_refs"])
    packets3, extradata3 = _packets(clips["three_refs"])
    reads3 = frame_references([bytes(p) for p in packets3], 4, extradata3).reads
    assert any(kinds3[r] == "Bref" for p, k in enumerate(kinds3) if k.startswith("P") for r in reads3[p])
    assert len(layout3.header_only(set(range(0, len(kinds3), 7)))) == 0


@pytest.mark.parametrize("name", list(VARIANTS))
def test_frames_are_exact_when_unread_references_go_in_header_only(clips, name):
    """Sampled frames equal a decode of every frame, one decoder or two, for 40 and 100 samples;
    the frames that went in header only are not counted as decoded. CAVLC pictures are never cut,
    and by default nothing is cut in pictures this small."""
    data = clips[name].read_bytes()
    layout, _ = _layout(clips[name])
    for count, threads in ((40, 1), (100, 1), (100, 2)):
        decoded = decode_pyav(load_source(data), lambda timeline, n=count: timeline.sample(n), 56, num_threads=threads,
                              header_cut_min_pixels=0)  # these clips are smaller than the default floor
        reference = _every_frame_then_pick(clips[name], decoded.indices, 56)
        assert np.array_equal(decoded.frames, reference), (name, count, threads)
        wanted = {int(i) for i in decoded.indices}
        cut = layout.header_only(wanted)
        if threads == 1:  # the decoder stops once the last wanted frame is out: a few fewer
            fed = len(layout.needed_packets(wanted)) - len(cut)
            assert fed - 4 <= decoded.decoded_frames <= fed, (name, decoded.decoded_frames, fed)
        if count == 40:
            assert (len(cut) > 0) == (name in ("fast_pyramid", "strict_pyramid", "three_slices", "mbaff")), name
    small = decode_pyav(load_source(data), lambda timeline: timeline.sample(40), 56, num_threads=1)
    assert small.decoded_frames >= len(layout.needed_packets({int(i) for i in small.indices})) - 4, (
        "176x144 is under the default floor: nothing goes in header only")


class _BitWriter:
    def __init__(self) -> None:
        self.bits = ""

    def u(self, n: int, value: int) -> "_BitWriter":
        self.bits += format(value, f"0{n}b") if n else ""
        return self

    def ue(self, value: int) -> "_BitWriter":
        code = format(value + 1, "b")
        self.bits += "0" * (len(code) - 1) + code
        return self

    def rbsp(self) -> bytes:
        bits = self.bits + "1"
        bits += "0" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big")


def test_what_the_model_does_not_follow_keeps_every_reference():
    """Picture order count type 1 (and field pictures, long-term references, other marking
    operations) are not modelled: the SPS parser refuses it and the stream keeps every reference."""
    sps = _BitWriter().u(8, 77).u(16, 0).ue(0).ue(0).ue(1).u(1, 0).ue(0).ue(0).ue(0).ue(3).u(1, 0).ue(10).ue(8).u(1, 1)
    with pytest.raises(Unsupported, match="order count type 1"):
        parse_sps(sps.rbsp())
    nal = b"\x67" + sps.rbsp()
    extradata = bytes([1, 77, 0, 30, 0xFF, 0xE1]) + len(nal).to_bytes(2, "big") + nal + bytes([0])
    assert frame_references([], 4, extradata) is None


def test_data_partitioned_slices_keep_every_reference(clips):
    """A slice split into data partitions (NAL unit types 2-4, Extended profile; ITU-T H.264
    7.4.1, Table 7-1) is not modelled: the stream keeps every reference instead of being cut
    around pictures the model did not read."""
    packets, extradata = _packets(clips["fast_pyramid"])
    length = avcc_length_size("h264", extradata)
    assert frame_references(packets, length, extradata) is not None
    for kind in (2, 3, 4):
        partition = bytes([0x40 | kind]) + b"\x88\x84"  # nal_ref_idc 2, a few payload bytes
        partitioned = list(packets)
        partitioned[1] = bytes(partitioned[1]) + len(partition).to_bytes(length, "big") + partition
        assert frame_references(partitioned, length, extradata) is None, kind


def test_damaged_packets_never_raise(clips):
    """Flipped bytes in slice headers and parameter sets: the model answers or gives up (None);
    it never raises, so a damaged stream decodes as it would without cuts."""
    packets, extradata = _packets(clips["fast_pyramid"])
    clean = [bytes(p) for p in packets]
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(200):
        damaged = list(clean)
        for pos in rng.choice(len(damaged), size=3, replace=False):
            data = bytearray(damaged[pos])
            for at in rng.integers(0, min(len(data), 48), size=2):  # length prefixes and header bytes
                data[at] ^= int(rng.integers(1, 256))
            damaged[pos] = bytes(data[:int(rng.integers(1, len(data) + 1))] if rng.random() < 0.2 else data)
        box = bytearray(extradata)
        if rng.random() < 0.3:
            box[int(rng.integers(8, len(box)))] ^= 0xFF
        outcomes.add(frame_references(damaged, 4, bytes(box)) is None)
    assert outcomes == {True, False}  # some damage is read through, some makes the model give up
