#!/usr/bin/env python3
"""make_bad_pickles.py - generate the torch.save fixtures for test_torch_pickle.c
and the seed corpora of the torch_pickle fuzz drivers, with the standard library
only (torch is not needed: a stand-in `torch` module gives the pickler the same
globals torch.save writes, and a small zip writer reproduces torch's layout:
stored records, 64-byte aligned data, zip64 end records).

Outputs (deterministic; re-run after changing this script and commit them):
  tests/data/bad-pickles/ok_*.bin       valid archives, values checked by the test
  tests/data/bad-pickles/<case>.bin     hostile or broken archives, each rejected
  tests/fuzz/corpus/torch_pickle/*      small archives (< 8 KB)
  tests/fuzz/corpus/torch_pickle_vm/*   bare data.pkl files; storage keys start
                                        with the record's byte length, which the
                                        fuzz driver's fake storage provider reads

Usage: python3 tests/unit/format-pickle/make_bad_pickles.py [repo root]
"""
import collections
import io
import os
import pickle
import struct
import sys
import types
import zlib

# ---- a stand-in torch: just the names torch.save pickles --------------------

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _global(module, name, obj):
    obj.__module__ = module.__name__
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(module, name, obj)
    return obj


_rebuild_tensor_v2 = _global(torch_utils, "_rebuild_tensor_v2", lambda *a: None)
_rebuild_parameter = _global(torch_utils, "_rebuild_parameter", lambda *a: None)

# storage type -> (struct format, element size)
STORAGE_TYPES = {
    "FloatStorage": ("f", 4),
    "HalfStorage": ("e", 2),
    "BFloat16Storage": (None, 2),
    "DoubleStorage": ("d", 8),
    "LongStorage": ("q", 8),
    "IntStorage": ("i", 4),
    "ShortStorage": ("h", 2),
    "CharStorage": ("b", 1),
    "ByteStorage": ("B", 1),
    "BoolStorage": ("?", 1),
}
STORAGE_CLASSES = {}
for _name in STORAGE_TYPES:
    STORAGE_CLASSES[_name] = _global(torch, _name, type(_name, (), {}))


def encode(stype, values):
    """Little-endian bytes of `values` in a storage type."""
    fmt, _ = STORAGE_TYPES[stype]
    if stype == "BFloat16Storage":
        return b"".join(struct.pack("<f", float(v))[2:] for v in values)
    if stype == "BoolStorage":
        return bytes(1 if v else 0 for v in values)
    if fmt in "fed":
        return struct.pack("<%d%s" % (len(values), fmt), *[float(v) for v in values])
    return struct.pack("<%d%s" % (len(values), fmt), *values)


def index_values(stype, numel):
    """Storage element i holds i (mod the type's range): the test checks views
    by recomputing which storage element each tensor element comes from."""
    if stype == "CharStorage":
        return [i % 128 for i in range(numel)]
    if stype == "ByteStorage":
        return [i % 256 for i in range(numel)]
    if stype == "BoolStorage":
        return [i % 2 for i in range(numel)]
    return list(range(numel))


class Storage:
    def __init__(self, stype, key, numel, data=None):
        self.stype, self.key, self.numel = stype, key, numel
        self.data = encode(stype, index_values(stype, numel)) if data is None else data


class Tensor:
    def __init__(self, storage, offset, size, stride, param=False, metadata=None, hooks=None):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)
        self.param, self.metadata = param, metadata
        self.hooks = collections.OrderedDict() if hooks is None else hooks

    def __reduce_ex__(self, proto):
        if self.param:
            inner = Tensor(self.storage, self.offset, self.size, self.stride)
            return (_rebuild_parameter, (inner, False, collections.OrderedDict()))
        args = (self.storage, self.offset, self.size, self.stride, False, self.hooks)
        if self.metadata is not None:
            args += (self.metadata,)
        return (_rebuild_tensor_v2, args)


def contiguous(storage, size, offset=0, **kw):
    stride, acc = [], 1
    for s in reversed(size):
        stride.insert(0, acc)
        acc *= s
    return Tensor(storage, offset, size, stride, **kw)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGE_CLASSES[obj.stype], obj.key, "cpu", obj.numel)
        return None


def dumps(obj, protocol=2):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def storages_of(obj):
    """Storages reachable from a state dict (dict order, first seen)."""
    seen = collections.OrderedDict()
    for t in obj.values() if isinstance(obj, dict) else obj:
        if isinstance(t, Tensor):
            seen.setdefault(t.storage.key, t.storage)
    return list(seen.values())


# ---- a zip writer in torch's style --------------------------------------------


def write_zip(entries, align=64, zip64=True, z64_extra=False, crc=True, method=None,
              flags=None, descriptor=True):
    """entries: [(name, bytes)]. method/flags: {name: value} overrides."""
    method = method or {}
    flags = flags or {}
    out, cd = bytearray(), bytearray()
    for name, data in entries:
        nb = name.encode()
        m = method.get(name, 0)
        fl = flags.get(name, 0x0808 if descriptor else 0x0800)
        payload = data
        if m == 8:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = c.compress(data) + c.flush()
        c32 = zlib.crc32(data) if crc else 0
        off = len(out)
        extra = b""
        if align:
            pad = (-(off + 30 + len(nb) + 4)) % align
            extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding, as torch
        lsz = 0 if fl & 8 else len(payload)
        lusz = 0 if fl & 8 else len(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, fl, m, 0, 0x21,
                           0 if fl & 8 else c32, lsz, lusz, len(nb), len(extra))
        out += nb + extra + payload
        if fl & 8:
            out += struct.pack("<IIII", 0x08074B50, c32, len(payload), len(data))
        if z64_extra:
            cext = struct.pack("<HHQQQ", 1, 24, len(data), len(payload), off)
            csz, usz, coff = 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF
        else:
            cext, csz, usz, coff = b"", len(payload), len(data), off
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, fl, m, 0, 0x21, c32, csz,
                          usz, len(nb), len(cext), 0, 0, 0, 0, coff)
        cd += nb + cext
    n = len(entries)
    cd_off = len(out)
    out += cd
    if zip64:
        z_off = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd), cd_off)
        out += struct.pack("<IIQI", 0x07064B50, 0, z_off, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(cd), cd_off, 0)
    return bytes(out)


def archive_entries(pkl, storages, prefix="archive", byteorder=b"little", extra=()):
    e = [(prefix + "/data.pkl", pkl), (prefix + "/.format_version", b"1"),
         (prefix + "/.storage_alignment", b"64")]
    if byteorder is not None:
        e.append((prefix + "/byteorder", byteorder))
    for s in storages:
        e.append((prefix + "/data/" + s.key, s.data))
    e.append((prefix + "/version", b"3\n"))
    e.append((prefix + "/.data/serialization_id", b"0123456789012345678901234567890123456789"))
    return e + list(extra)


def torch_save(obj, protocol=2, prefix="archive", **zip_kw):
    return write_zip(archive_entries(dumps(obj, protocol), storages_of(obj), prefix), **zip_kw)


def raw_archive(pkl, storages=(), **zip_kw):
    """An archive around hand-written pickle bytes."""
    return write_zip(archive_entries(pkl, storages), **zip_kw)


# ---- valid fixtures -------------------------------------------------------------


def views_state_dict():
    f = Storage("FloatStorage", "0", 24)
    i = Storage("IntStorage", "1", 24)
    sd = collections.OrderedDict()
    sd["f32.contig"] = contiguous(f, (2, 3))
    sd["f32.transposed"] = Tensor(f, 0, (3, 2), (1, 3))          # shares storage 0
    sd["f32.offset"] = contiguous(f, (4,), offset=5)
    sd["f32.step"] = Tensor(f, 1, (3,), (2,))
    sd["f32.scalar"] = Tensor(f, 7, (), ())
    sd["f32.empty"] = Tensor(f, 0, (0, 4), (4, 1))
    sd["f32.broadcast"] = Tensor(f, 2, (2, 3), (0, 1))
    sd["f32.size1dims"] = Tensor(f, 3, (1, 4, 1), (100, 1, 7))      # contiguous despite strides
    sd["i32.permuted"] = Tensor(i, 0, (4, 2, 3), (1, 12, 4))
    sd["i32.sliced"] = Tensor(i, 13, (2, 2), (6, 2))
    sd["i32.param"] = contiguous(i, (2, 12), param=True)
    sd["f32.metadata"] = Tensor(f, 0, (2, 2), (1, 2), metadata={})
    for k, st in enumerate(["HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage",
                            "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage"]):
        s = Storage(st, str(2 + k), 10)
        sd[st.replace("Storage", "").lower() + ".contig"] = contiguous(s, (2, 5))
        sd[st.replace("Storage", "").lower() + ".transposed"] = Tensor(s, 0, (5, 2), (1, 5))
    # a torch state_dict() is an OrderedDict whose _metadata travels as BUILD state
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("lin", {"version": 1})])
    return sd


def small_state_dict(n=2, stype="FloatStorage", key_of=str):
    sd = {}
    for k in range(n):
        s = Storage(stype, key_of(k), 8)
        sd["layer.%d.lora_A.weight" % k] = contiguous(s, (2, 4))
    return sd


def fuzz_state_dict():
    """Keys start with the byte length: the VM driver's provider reads it."""
    f = Storage("FloatStorage", "48.0", 12)
    h = Storage("HalfStorage", "16.1", 8)
    return collections.OrderedDict([
        ("a", contiguous(f, (3, 4))),
        ("a.T", Tensor(f, 0, (4, 3), (1, 4))),
        ("h", Tensor(h, 1, (3,), (2,))),
    ])


# ---- hostile and broken pickles ---------------------------------------------------

P2 = b"\x80\x02"


def binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def one_tensor_pickle(offset=0, size=(2, 4), stride=None, numel=8, key="0", stype="FloatStorage",
                      pid_kind="storage"):
    """A hand-written state dict {'w': tensor} (so fields can be anything)."""
    if stride is None:
        stride, acc = [], 1
        for s in reversed(size):
            stride.insert(0, acc)
            acc *= s
    p = P2 + b"}(" + binunicode("w")
    p += b"ctorch._utils\n_rebuild_tensor_v2\n("
    p += b"(" + binunicode(pid_kind) + b"ctorch\n" + stype.encode() + b"\n"
    p += binunicode(key) + binunicode("cpu") + pyint(numel) + b"tQ"
    p += pyint(offset)
    p += b"(" + b"".join(pyint(v) for v in size) + b"t"
    p += b"(" + b"".join(pyint(v) for v in stride) + b"t"
    p += b"\x89ccollections\nOrderedDict\n)R" + b"tR" + b"u."
    return p


def pyint(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2 ** 31) <= v < 2 ** 31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def f32_storage(key="0", numel=8):
    return Storage("FloatStorage", key, numel)


def bad_cases():
    """name -> archive bytes. The test holds the expected message for each."""
    cases = {}
    st = [f32_storage()]

    def reduce_global(mod, name, proto=2):
        return bytes([0x80, proto]) + b"c" + mod + b"\n" + name + b"\n" + binunicode("id") + b"\x85R."

    cases["global_os_system"] = raw_archive(reduce_global(b"os", b"system"))
    cases["global_builtins_eval"] = raw_archive(reduce_global(b"builtins", b"eval"))
    cases["global_posix_system"] = raw_archive(reduce_global(b"posix", b"system"))
    cases["global_subprocess_popen"] = raw_archive(reduce_global(b"subprocess", b"Popen"))
    cases["global_torch_load"] = raw_archive(reduce_global(b"torch", b"load"))
    cases["stack_global_os_system"] = raw_archive(
        b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94" + binunicode("id") + b"\x85R.")
    cases["inst"] = raw_archive(P2 + b"(" + binunicode("id") + b"ios\nsystem\n.")
    cases["obj"] = raw_archive(P2 + b"(ccollections\nOrderedDict\no.")
    cases["newobj"] = raw_archive(P2 + b"ccollections\nOrderedDict\n)\x81.")
    cases["ext1"] = raw_archive(P2 + b"\x82\x01.")
    cases["reduce_storage_type"] = raw_archive(P2 + b"ctorch\nFloatStorage\n)R.")
    cases["reduce_on_str"] = raw_archive(P2 + binunicode("os") + b")R.")
    cases["unknown_opcode"] = raw_archive(P2 + b"}\xff.")
    good = one_tensor_pickle()
    cases["truncated_pickle"] = raw_archive(good[: len(good) // 2], st)
    cases["no_stop"] = raw_archive(good[:-1], st)
    cases["trailing_after_stop"] = raw_archive(good + b"N", st)
    cases["memo_out_of_range"] = raw_archive(P2 + b"}q\x00h\xc8.")
    cases["memo_put_sparse"] = raw_archive(P2 + b"}r\x00\x00\x10\x00.")
    cases["missing_storage"] = raw_archive(one_tensor_pickle(key="7"), st)
    cases["offset_past_storage"] = raw_archive(one_tensor_pickle(offset=1), st)
    cases["size_past_storage"] = raw_archive(one_tensor_pickle(size=(3, 4)), st)
    cases["stride_past_storage"] = raw_archive(one_tensor_pickle(size=(2, 4), stride=(5, 1)), st)
    cases["huge_numel"] = raw_archive(one_tensor_pickle(numel=2 ** 62), st)
    cases["size_overflow"] = raw_archive(
        one_tensor_pickle(size=(2 ** 40, 2 ** 40), stride=(0, 0)), st)
    cases["record_size_mismatch"] = raw_archive(one_tensor_pickle(numel=6, size=(2, 3)), st)
    cases["too_many_dims"] = raw_archive(one_tensor_pickle(size=(1,) * 9, stride=(1,) * 9), st)
    cases["negative_stride"] = raw_archive(one_tensor_pickle(size=(8,), stride=(-1,)), st)
    cases["pid_not_storage"] = raw_archive(one_tensor_pickle(pid_kind="module"), st)
    cases["bad_storage_type"] = raw_archive(one_tensor_pickle(stype="QInt8Storage"), st)
    cases["top_level_list"] = raw_archive(dumps([contiguous(st[0], (8,))]), st)
    cases["top_level_tensor"] = raw_archive(dumps(contiguous(st[0], (8,))), st)
    cases["value_not_tensor"] = raw_archive(dumps({"w": 3}))
    cases["key_not_str"] = raw_archive(dumps({7: contiguous(st[0], (8,))}), st)
    dup = one_tensor_pickle()
    # {'w': t, 'w': t}: SETITEMS with the same key twice
    body = dup[len(P2) + 2:-2]  # between "}(" and "u."
    cases["duplicate_tensor_name"] = raw_archive(P2 + b"}(" + body + body + b"u.", st)
    cases["dtype_conflict"] = raw_archive(
        dumps({"a": contiguous(st[0], (8,)),
               "b": contiguous(Storage("IntStorage", "0", 8, st[0].data), (8,))}), st)
    cases["backward_hooks"] = raw_archive(dumps({"w": Tensor(st[0], 0, (8,), (1,), hooks=collections.OrderedDict([(1, 2)]))}), st)
    cases["build_on_plain_dict"] = raw_archive(P2 + b"}}b.")
    cases["build_on_tensor"] = raw_archive(one_tensor_pickle()[:-2] + b"}bu.", st)
    cases["protocol_6"] = raw_archive(b"\x80\x06}.")
    cases["bad_utf8"] = raw_archive(P2 + b"}(X\x02\x00\x00\x00\xc3\x28Nu.")
    cases["nul_in_name"] = raw_archive(dumps({"a\0b": contiguous(st[0], (8,))}), st)
    cases["stack_underflow"] = raw_archive(P2 + b"s.")
    cases["setitems_without_mark"] = raw_archive(P2 + b"}u.")
    cases["odd_setitems"] = raw_archive(P2 + b"}(NNNu.")
    cases["unclosed_mark"] = raw_archive(P2 + b"}(.")
    cases["binunicode_past_end"] = raw_archive(P2 + b"X\xff\xff\xff\x7fabc.")
    cases["global_too_long"] = raw_archive(P2 + b"c" + b"a" * 300 + b"\nb\n.")
    cases["long1_too_big"] = raw_archive(P2 + b"\x8a\x09" + b"\x01" * 9 + b".")

    # archive-level damage
    sd = small_state_dict(1)
    pkl = dumps(sd)
    ents = archive_entries(pkl, storages_of(sd))
    cases["compressed_entry"] = write_zip(ents, method={"archive/data.pkl": 8})
    cases["encrypted_entry"] = write_zip(ents, flags={"archive/data/0": 0x0809})
    z = bytearray(write_zip(ents))
    cd_off = struct.unpack_from("<I", z, len(z) - 6)[0]
    bad = bytearray(z)
    bad[cd_off:cd_off + 4] = b"PK\x09\x09"
    cases["bad_central_directory"] = bytes(bad)
    bad = bytearray(z)
    struct.pack_into("<I", bad, len(bad) - 6, len(z) - 10)  # cd offset past the end
    # also break the zip64 copy so both views agree the directory is off the end
    z64 = len(z) - 22 - 20 - 56
    struct.pack_into("<Q", bad, z64 + 48, len(z) + 1000)
    cases["central_directory_out_of_range"] = bytes(bad)
    bad = bytearray(z)
    struct.pack_into("<Q", bad, len(z) - 22 - 20 + 8, len(z) * 4)  # locator -> nowhere
    cases["zip64_locator_out_of_range"] = bytes(bad)
    bad = bytearray(z)
    struct.pack_into("<I", bad, cd_off + 42, len(z) - 40)  # first local header offset
    cases["local_header_out_of_range"] = bytes(bad)
    bad = bytearray(z)
    idx = bad.find(b"layer.0")
    bad[idx] ^= 0x20  # flips a byte of data.pkl: CRC mismatch
    cases["crc_mismatch"] = bytes(bad)
    cases["duplicate_entry"] = write_zip(ents + [ents[-1]])
    cases["entry_outside_folder"] = write_zip(ents + [("other/readme.txt", b"hi")])
    cases["no_data_pkl"] = write_zip([(n.replace("data.pkl", "data.pk"), d) for n, d in ents])
    cases["big_endian"] = write_zip(archive_entries(pkl, storages_of(sd), byteorder=b"big"))
    cases["bad_version"] = write_zip(ents[:-2] + [("archive/version", b"three")])
    cases["legacy_format"] = pkl
    cases["not_a_zip"] = b"hello, this is not a zip archive at all" * 3
    cases["empty_file"] = b""
    return cases


# ---- output ---------------------------------------------------------------------------


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..",
                                                              "..", "..")
    data = os.path.join(root, "tests", "data", "bad-pickles")
    corpus = os.path.join(root, "tests", "fuzz", "corpus", "torch_pickle")
    corpus_vm = os.path.join(root, "tests", "fuzz", "corpus", "torch_pickle_vm")
    for d in (data, corpus, corpus_vm):
        os.makedirs(d, exist_ok=True)

    def put(d, name, blob):
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob)

    views = views_state_dict()
    put(data, "ok_views.bin", torch_save(views))
    put(data, "ok_views_proto4.bin", torch_save(views, protocol=4, prefix="adapter_model"))
    put(data, "ok_views_proto5_zip64_nocrc.bin",
        torch_save(views, protocol=5, z64_extra=True, crc=False))
    # Python's own zipfile: no alignment, no zip64, no data descriptors
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, blob in archive_entries(dumps(views), storages_of(views)):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), blob)
    put(data, "ok_views_zipfile.bin", buf.getvalue())
    put(data, "ok_empty_dict.bin", raw_archive(dumps({})))
    for name, blob in sorted(bad_cases().items()):
        put(data, name + ".bin", blob)

    # fuzz seeds (< 8 KB each)
    put(corpus, "small2.bin", torch_save(small_state_dict(2)))
    put(corpus, "small1_proto4.bin", torch_save(small_state_dict(1, "HalfStorage"), protocol=4))
    put(corpus, "views_nocrc.bin", torch_save(fuzz_state_dict(), crc=False, align=0,
                                              zip64=False))
    put(corpus, "small3_zip64_nocrc.bin",
        torch_save(small_state_dict(3, "BFloat16Storage"), z64_extra=True, crc=False))
    cases = bad_cases()
    for name in ("global_os_system", "compressed_entry", "size_past_storage",
                 "stack_global_os_system"):
        put(corpus, "bad_" + name + ".bin", cases[name])
    put(corpus_vm, "views.pkl", dumps(fuzz_state_dict()))
    put(corpus_vm, "views_proto4.pkl", dumps(fuzz_state_dict(), protocol=4))
    put(corpus_vm, "metadata.pkl", dumps(views_state_dict_for_vm()))
    put(corpus_vm, "bad_os_system.pkl", P2 + b"cos\nsystem\n" + binunicode("id") + b"\x85R.")
    put(corpus_vm, "bad_inst.pkl", P2 + b"(" + binunicode("id") + b"ios\nsystem\n.")
    for d in (data, corpus, corpus_vm):
        for f in os.listdir(d):
            size = os.path.getsize(os.path.join(d, f))
            if d != data and size >= 8192:
                sys.exit("%s/%s is %d bytes; seeds must stay under 8 KB" % (d, f, size))


def views_state_dict_for_vm():
    """The views fixture with keys renamed to '<nbytes>.<n>' for the VM driver."""
    sd = views_state_dict()
    renamed = {}
    for t in sd.values():
        inner = t.storage
        if inner.key not in renamed:
            inner.key = "%d.%s" % (len(inner.data), inner.key)
            renamed[inner.key] = True
    return sd


if __name__ == "__main__":
    main()
