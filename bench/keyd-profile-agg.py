#!/usr/bin/env python3
"""Used by bench/keyd-profile.sh: folds `perf report` of A.data and B.data (in
the current directory) into categories, in µs per release (argv: A and B
keyd CPU µs per release)."""
import re,subprocess,sys
cats=[('ed25519/ristretto (curve25519_dalek, sha512)',r'curve25519|ed25519|sha512|Sha512|ristretto|scalar'),
('TLS record + aes-gcm (rustls, aws-lc)',r'rustls|aws_lc|aes_gcm|gcm_|aesni|GFp|ChaCha|poly1305'),
('SHA-256',r'sha256|Sha256|sha2::|SHA256'),
('SQLite',r'sqlite|sqlx'),
('JSON (serde)',r'serde|json'),
('audit / merkle',r'atrest_audit|merkle|Merkle'),
('keyd logic',r'atrest_keyd|atrest_remote|atrest_wire'),
('malloc/memcpy',r'malloc|free|memmove|memcpy|memset|realloc|cfree'),
('http/axum/hyper/tokio',r'hyper|axum|tokio|tower|h2|http::|flume|futures|mio'),
('kernel',r'^\[k\]'),
]
def parse(label):
    out=subprocess.run(['perf','report','-i',f'{label}.data','--no-children','--sort','sym','--stdio','--percent-limit','0'],capture_output=True,text=True).stdout
    res={}
    for line in out.splitlines():
        m=re.match(r'\s+([0-9.]+)%\s+(\[.\])\s+(.*?)\s+-\s+-\s*$',line) or re.match(r'\s+([0-9.]+)%\s+(\[.\])\s+(.*)$',line)
        if not m: continue
        pct=float(m.group(1)); sym=m.group(2)+' '+m.group(3).strip()
        for name,rx in cats:
            if re.search(rx,sym if name!='kernel' else m.group(2)):
                res[name]=res.get(name,0)+pct;break
        else: res['other']=res.get('other',0)+pct
    return res
cpu={'A':float(sys.argv[1]),'B':float(sys.argv[2])}
r={L:parse(L) for L in 'AB'}
print(f"| item | A µs/release | B µs/release | B-A |")
print("|---|---:|---:|---:|")
for name in [c[0] for c in cats]+['other']:
    a=r['A'].get(name,0)*cpu['A']/100; b=r['B'].get(name,0)*cpu['B']/100
    print(f"| {name} | {a:.0f} | {b:.0f} | {b-a:+.0f} |")
print(f"| total | {cpu['A']:.0f} | {cpu['B']:.0f} | {cpu['B']-cpu['A']:+.0f} |")
