# An app-like data directory for A/B runs: a WAL and a rollback-journal SQLite
# database (200k and 150k rows), 8,000 JSON documents, 120 MB of media,
# 30,000 tiny cache files (338 MB, 38,507 entries).
import os, random, sqlite3, sys
root = sys.argv[1]
random.seed(42)
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
def text(n): return " ".join(random.choice(words) for _ in range(n))
os.makedirs(f"{root}/databases", exist_ok=True)
for name, rows, mode in [("messages.db", 200000, "wal"), ("cache.db", 150000, "delete")]:
    c = sqlite3.connect(f"{root}/databases/{name}")
    c.execute(f"PRAGMA journal_mode={mode}")
    c.execute("CREATE TABLE m(id INTEGER PRIMARY KEY, body TEXT, score REAL)")
    c.executemany("INSERT INTO m(body, score) VALUES (?, ?)", ((text(20), random.random()) for _ in range(rows)))
    c.commit(); c.close()
for i in range(8000):
    d = f"{root}/docs/{i % 80}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/doc{i}.json", "w") as f: f.write('{"t":"%s"}' % text(random.randint(100, 2000)))
os.makedirs(f"{root}/media", exist_ok=True)
for i in range(120):
    with open(f"{root}/media/p{i}.jpg", "wb") as f: f.write(os.urandom(1_000_000))
for i in range(30000):
    d = f"{root}/cache/{i % 300}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/c{i}", "wb") as f: f.write(os.urandom(random.randint(0, 255)))
