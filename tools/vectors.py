#!/usr/bin/env python3
"""Computes format-spec §17's test vectors with libraries independent of Strata's own
(blake3, PyNaCl's libsodium, argon2-cffi), to check the spec and the code against a second
implementation: `pip install blake3 pynacl argon2-cffi; tools/vectors.py`. The chunker's
cut points are not here (no second FastCDC with a seeded gear table): the Rust test records
them."""
import blake3
from argon2.low_level import Type, hash_secret_raw
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as xchacha

M = bytes(range(32))
kdf = lambda ctx, k: blake3.blake3(k, derive_key_context=ctx).digest()
enc = kdf("strata v1 2026-11 encryption key", M)
idk = kdf("strata v1 2026-11 blob id key", M)
seed = int.from_bytes(kdf("strata v1 2026-11 chunker seed", M)[:8], "little") | 1
walk = kdf("strata v1 2026-11 wal record name", M)
rootk = kdf("strata v4 2026-12 root record name", M)
kh = lambda k, x: blake3.blake3(x, key=k).digest()

plain = b"strata test vector"
blob = kh(idk, plain)
nonce = bytes(range(0x40, 0x58))
sealed = nonce + xchacha(plain, bytes([0]) + blob, nonce, enc)
password, salt = b"correct horse battery staple", bytes(range(0x10, 0x20))
kek = hash_secret_raw(password, salt, 1, 64, 1, 32, Type.ID, version=0x13)
wnonce = bytes(range(0x60, 0x78))
wrapped = wnonce + xchacha(M, b"strata/key/v1", wnonce, kek)

out = [
    ("master_secret", M.hex()),
    ("encryption_key", enc.hex()),
    ("blob_id_key", idk.hex()),
    ("chunker_seed", f"{seed:016x}"),
    ("wal_name_key", walk.hex()),
    ("root_name_key", rootk.hex()),
    ("blob_plaintext", plain.hex()),
    ("blob_id", blob.hex()),
    ("blob_id_of_empty", kh(idk, b"").hex()),
    ("wal_name_main_000000010000000000000001",
     kh(walk, b"main\0" + b"000000010000000000000001").hex()),
    ("root_name_postgres.wal_main", kh(rootk, b"postgres.wal\0main").hex()),
    ("sealed_data_blob", sealed.hex()),
    ("password", password.hex()),
    ("argon2id_salt", salt.hex()),
    ("argon2id_m64_t1_p1_kek", kek.hex()),
    ("wrapped_master_secret", wrapped.hex()),
]
for k, v in out:
    print(f"{k} {v}")
