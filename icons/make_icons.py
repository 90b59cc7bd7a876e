"""Regenerates the PNG icons in this folder (pure Python, no imaging library needed).

App icons are the brand green; tray-<colour>.png are the tray states (worst state wins).
Run: python3 icons/make_icons.py
"""
import math
import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).parent


def png(path, size, rgb):
    rows = []
    c = (size - 1) / 2
    r = size * 0.42
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            d = math.hypot(x - c, y - c)
            alpha = max(0.0, min(1.0, r - d + 0.5))
            col = (255, 255, 255) if d < r * 0.45 else rgb
            row += bytes(col) + bytes([int(alpha * 255)])
        rows.append(bytes(row))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    (HERE / path).write_bytes(data)


BRAND = (46, 125, 50)
png("32x32.png", 32, BRAND)
png("128x128.png", 128, BRAND)
png("icon.png", 512, BRAND)
for name, col in [("green", (46, 160, 67)), ("yellow", (212, 167, 44)), ("red", (207, 34, 46)), ("grey", (140, 149, 159))]:
    png(f"tray-{name}.png", 64, col)
