import struct, numpy as np
def read_wav(path):
    """Minimal RIFF reader (PCM 16-bit or IEEE float32, mono or multi-channel) -> float32 mono, rate."""
    b = open(path, 'rb').read()
    assert b[:4] == b'RIFF' and b[8:12] == b'WAVE'
    i = 12; fmt = data = None
    while i + 8 <= len(b):
        cid, n = b[i:i+4], struct.unpack('<I', b[i+4:i+8])[0]
        body = b[i+8:i+8+n]
        if cid == b'fmt ': fmt = struct.unpack('<HHIIHH', body[:16])
        elif cid == b'data': data = body
        i += 8 + n + (n & 1)
    tag, ch, sr, _, _, bits = fmt
    if tag == 0xFFFE: tag = struct.unpack('<H', body[24:26])[0] if False else (3 if bits == 32 else 1)
    if tag == 1 and bits == 16: x = np.frombuffer(data, '<i2').astype(np.float32) / 32768
    elif tag == 3 and bits == 32: x = np.frombuffer(data, '<f4').astype(np.float32)
    else: raise ValueError(f'{path}: format {tag}/{bits}')
    return x.reshape(-1, ch).mean(1), sr
def to_int16(x):
    return np.clip(np.round(x * 32768), -32768, 32767).astype('<i2')
