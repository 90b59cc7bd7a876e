"""Regenerates the PNG icons in this folder (pure Python, no imaging library needed).

App icons are the brand green (`icon.ico` for Windows holds 16 to 256 px, `icon.icns` for macOS
32 to 512 px; the PNGs are the Linux packages' hicolor icons). tray-<state>.png (64 px: crisp at 2x in a 32 px panel) and
tray-<state>-32.png (1x) are the tray states, worst state wins; each state has a shape besides
its colour, as the dashboard's tabs do: green a dot, yellow a half dot, red a cross, grey an
empty ring. Edges are antialiased by 4x4 supersampling.
Run: python3 icons/make_icons.py
"""
import math
import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).parent
WHITE = (255, 255, 255)
SAMPLES = 4


def glyph_dot(u, v):
    return math.hypot(u, v) < 0.42


def glyph_half(u, v):
    # The left half of the dot, and a thin ring around the whole of it.
    d = math.hypot(u, v)
    return (d < 0.42 and u <= 0) or 0.33 < d < 0.42


def glyph_cross(u, v):
    w = 0.11
    return abs(u) < 0.46 and abs(v) < 0.46 and (abs(u - v) < w * 1.414 or abs(u + v) < w * 1.414)


def glyph_none(u, v):
    return False


def pixel(x, y, size, rgb, glyph, ring):
    """The colour and coverage of one pixel: a disc of `rgb` (or only its ring) with `glyph` in white."""
    c = size / 2
    r = size * 0.46
    covered = 0
    white = 0
    for sy in range(SAMPLES):
        for sx in range(SAMPLES):
            px = x + (sx + 0.5) / SAMPLES
            py = y + (sy + 0.5) / SAMPLES
            d = math.hypot(px - c, py - c)
            if d > r:
                continue
            if ring and d < r * 0.62:
                continue
            covered += 1
            if glyph((px - c) / r, (py - c) / r):
                white += 1
    n = SAMPLES * SAMPLES
    if covered == 0:
        return (0, 0, 0, 0)
    t = white / covered
    col = tuple(round(a * (1 - t) + b * t) for a, b in zip(rgb, WHITE))
    return col + (round(255 * covered / n),)


def png_bytes(size, rgb, glyph=glyph_dot, ring=False):
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row += bytes(pixel(x, y, size, rgb, glyph, ring))
        rows.append(bytes(row))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")


def png(path, size, rgb, glyph=glyph_dot, ring=False):
    (HERE / path).write_bytes(png_bytes(size, rgb, glyph, ring))


def ico(path, sizes, rgb):
    """A Windows icon holding one PNG image per size (PNG entries: Windows Vista and later)."""
    images = [png_bytes(size, rgb) for size in sizes]
    header = struct.pack("<HHH", 0, 1, len(images))
    offset = 6 + 16 * len(images)
    entries = b""
    for size, data in zip(sizes, images):
        side = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
    (HERE / path).write_bytes(header + entries + b"".join(images))


def icns(path, entries, rgb):
    """A macOS icon: one PNG image per (type, size) entry (the PNG types of macOS 10.7 and later)."""
    body = b"".join(
        kind + struct.pack(">I", 8 + len(data)) + data
        for kind, data in ((kind, png_bytes(size, rgb)) for kind, size in entries)
    )
    (HERE / path).write_bytes(b"icns" + struct.pack(">I", 8 + len(body)) + body)


BRAND = (46, 125, 50)
png("32x32.png", 32, BRAND)
png("128x128.png", 128, BRAND)
png("256x256.png", 256, BRAND)
png("icon.png", 512, BRAND)
ico("icon.ico", [16, 24, 32, 48, 64, 256], BRAND)
icns("icon.icns", [(b"ic11", 32), (b"ic12", 64), (b"ic07", 128), (b"ic13", 256), (b"ic09", 512)], BRAND)
TRAY = [
    ("green", (46, 160, 67), glyph_dot, False),
    ("yellow", (212, 167, 44), glyph_half, False),
    ("red", (207, 34, 46), glyph_cross, False),
    ("grey", (140, 149, 159), glyph_none, True),
]
for name, col, glyph, ring in TRAY:
    png(f"tray-{name}.png", 64, col, glyph, ring)
    png(f"tray-{name}-32.png", 32, col, glyph, ring)
