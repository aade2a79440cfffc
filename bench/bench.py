#!/usr/bin/env python3
"""pgkeep's benchmark: pgkeep against pg_dump/pg_restore on the same database, in one run.

Starts a private PostgreSQL cluster and a single-node Garage (the S3 store), builds the
benchmark database (bench/gen.py), then runs every command once per round, in the same order
each round, and keeps the best time of each. Prints one table of absolute numbers and ratios
against `pg_dump -Fc` (backups) and `pg_restore -j2` (restores), checks that every restored
database equals the source, and compares peak memory against a 10x larger database when asked.
With several codecs (`--compression gzip,zstd`) pgkeep's backups and restores run once per
codec in every round, side by side.

Run through bench/run.sh, which builds the release binary first. Standard library only.
"""

import argparse
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACCESS_KEY = "GK0123456789abcdef01234567"
SECRET_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
BUCKET = "pgkeep-bench"
TABLES = ["customers", "orders", "events", "attachments", "readings"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin_dir(explicit):
    if explicit:
        return Path(explicit)
    root = Path("/usr/lib/postgresql")
    majors = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit()), reverse=True)
    if not majors:
        raise SystemExit("no PostgreSQL under /usr/lib/postgresql; pass --pg-bin")
    return root / str(majors[0]) / "bin"


class Cluster:
    """A throwaway PostgreSQL cluster run as the `postgres` user (initdb refuses root)."""

    def __init__(self, bindir, root):
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.proc = None
        self.user = pwd.getpwnam("postgres")

    def as_postgres(self, args, **kw):
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, check=True, **kw)

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self.as_postgres(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--locale=C"],
                stdout=subprocess.DEVNULL,
            )
        args = [str(self.bindir / "postgres"), "-D", str(self.data),
                "-c", f"port={self.port}", "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.root}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_wal_size=4GB", "-c", "max_connections=50",
                # Autovacuum would clean up after one command while the next one is timed.
                "-c", "autovacuum=off"]
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        logf = open(self.root / "postgres.log", "ab")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=logf, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"postgres exited; see {self.root / 'postgres.log'}")
            r = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1",
                                "-p", str(self.port)])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit("postgres did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, db, sql, capture=True):
        r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.url(db),
                            "-c", sql], check=True, capture_output=capture, text=True)
        return r.stdout.strip() if capture else None

    def recreate(self, db):
        self.psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        self.psql("postgres", f"CREATE DATABASE {db}")

    def exists(self, db):
        return self.psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{db}'") == "1"


class Garage:
    def __init__(self, binary, root):
        self.binary = binary
        self.root = root
        self.proc = None

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        rpc, s3, admin = free_port(), free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{s3}"
        config = self.root / "garage.toml"
        config.write_text(f"""metadata_dir = "{self.root}/meta"
data_dir = "{self.root}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{SECRET_KEY}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
""")
        env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=ACCESS_KEY,
                   GARAGE_DEFAULT_SECRET_KEY=SECRET_KEY, GARAGE_DEFAULT_BUCKET=BUCKET,
                   RUST_LOG="garage=warn")
        logf = open(self.root / "garage.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(config), "server", "--single-node", "--default-bucket"],
            env=env, stdout=logf, stderr=logf, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"garage exited; see {self.root / 'garage.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("garage did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def timed(args, env=None, stdout=subprocess.DEVNULL, cwd=None):
    """Runs `args` under /usr/bin/time -v: (wall seconds, peak RSS MB, cpu seconds, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, *args], env=env, cwd=cwd,
                           stdout=stdout, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - t0
        report = Path(tf.name).read_text()
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(args)}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1)) / 1024
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", report).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", report).group(1))
    out = r.stdout if isinstance(r.stdout, str) else ""
    timed.stderr = r.stderr
    return wall, rss, user + system, out


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = Path(a.workdir)
        self.bindir = pg_bin_dir(a.pg_bin)
        self.cluster = Cluster(self.bindir, self.work / "pg")
        self.garage = Garage(a.garage, self.work / "garage")
        self.out = self.work / "out"
        self.codecs = a.compression.split(",")
        self.results = {}  # name -> list of (wall, rss, cpu)
        self.sizes = {}
        self.ids = {}

    # ---- setup ----
    def setup(self):
        self.work.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(exist_ok=True)
        self.cluster.start()
        self.garage.start()
        self.ensure_db("bench_src", self.a.scale)
        self.write_config()

    def ensure_db(self, db, scale):
        marker = self.work / f"{db}.built"
        want = f"scale={scale} seed={self.a.seed}"
        if self.cluster.exists(db) and marker.exists() and marker.read_text() == want:
            log(f"reusing {db} ({want})")
            return
        log(f"building {db} ({want}) ...")
        t0 = time.monotonic()
        self.cluster.recreate(db)
        subprocess.run([sys.executable, str(HERE / "gen.py"), "--conn", self.cluster.url(db),
                        "--scale", str(scale), "--seed", self.a.seed], check=True)
        marker.write_text(want)
        log(f"built {db} in {time.monotonic() - t0:.0f} s")

    def job(self, base, codec):
        """The job name of `base` (dump, export, dump10, export10) in `codec`."""
        if codec == self.codecs[0]:
            return base
        return f"{base}-{codec.replace(':', '-').replace('+', '-')}"

    def label(self, text, codec):
        """A result row's name: `text`, with the codec when several are compared."""
        return text if len(self.codecs) == 1 else f"{text} [{codec}]"

    def write_config(self):
        """One config for the plain codecs and, when a codec ends in `+age` (encrypted with a
        key made here), one more whose store holds the encrypted backups."""
        jobs = {False: "", True: ""}
        for codec in self.codecs:
            encrypted = codec.endswith("+age")
            for base, kind, db in [("dump", "dump", "bench_src"), ("export", "export", "bench_src"),
                                   ("dump10", "dump", "bench_src10"),
                                   ("export10", "export", "bench_src10")]:
                jobs[encrypted] += f"""
[jobs.{self.job(base, codec)}]
kind = "{kind}"
database = "{self.cluster.url(db)}"
compression = "{codec.removesuffix('+age')}"
"""
                if kind == "export":
                    jobs[encrypted] += f"parallel = {self.a.parallel}\ninclude = [\"bench.*\"]\n"
        def storage(prefix):
            s3 = f"""[storage]
url = "s3://{BUCKET}/{prefix}"
[storage.s3]
endpoint = "{self.garage.endpoint}"
region = "garage"
force_path_style = true
"""
            if self.a.part_size_mib:
                s3 += f"part_size_mib = {self.a.part_size_mib}\n"
            if self.a.parts_in_flight:
                s3 += f"parts_in_flight = {self.a.parts_in_flight}\n"
            return s3
        self.config = self.work / "pgkeep.toml"
        self.config.write_text(storage("run") + jobs[False])
        self.config_age = self.work / "pgkeep-age.toml"
        if jobs[True]:
            key = self.work / "age.key"
            if not key.exists():
                subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
            recipient = next(l.split(": ", 1)[1] for l in key.read_text().splitlines()
                             if l.startswith("# public key: "))
            self.config_age.write_text(
                storage("run-age")
                + f'[storage.encryption]\nrecipients = ["{recipient}"]\nidentity_file = "{key}"\n'
                + jobs[True])
        self.encrypted_jobs = {self.job(b, c) for c in self.codecs if c.endswith("+age")
                               for b in ("dump", "export", "dump10", "export10")}
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                        AWS_REGION="garage", AWS_EC2_METADATA_DISABLED="true",
                        RUST_LOG=os.environ.get("RUST_LOG", "warn"))

    def pgkeep_for(self, job, *args):
        """`pgkeep ARGS` with the config that holds `job`."""
        config = self.config_age if job in self.encrypted_jobs else self.config
        return [self.a.pgkeep, "--config", str(config), *args]

    def pgkeep(self, *args):
        return [self.a.pgkeep, "--config", str(self.config), *args]

    def settle(self):
        """Starts every timed command on a quiet server: dirty buffers of the previous one
        written out, the kernel's writeback done."""
        self.cluster.psql("postgres", "CHECKPOINT")
        os.sync()

    def record(self, name, wall, rss, cpu):
        self.results.setdefault(name, []).append((wall, rss, cpu))
        log(f"  {name:<34} {wall:7.2f} s  {rss:7.1f} MB  cpu {cpu:6.2f} s")

    # ---- the commands ----
    def floor(self):
        script = self.out / "copy_all.sql"
        script.write_text("".join(f"COPY bench.{t} TO STDOUT;\n" for t in TABLES))
        wall, rss, cpu, _ = timed(["psql", "-X", "-q", "-d", self.cluster.url("bench_src"),
                                   "-f", str(script)])
        self.record("floor: COPY all tables > /dev/null", wall, rss, cpu)

    def pg_dump_fc(self):
        path = self.out / "bench.dump"
        path.unlink(missing_ok=True)
        wall, rss, cpu, _ = timed(["pg_dump", "-Fc", "-f", str(path),
                                   "-d", self.cluster.url("bench_src")])
        self.record("pg_dump -Fc", wall, rss, cpu)
        self.sizes["pg_dump -Fc"] = path.stat().st_size

    def pg_dump_fd(self):
        path = self.out / "bench.dir"
        shutil.rmtree(path, ignore_errors=True)
        wall, rss, cpu, _ = timed(["pg_dump", "-Fd", "-j2", "-f", str(path),
                                   "-d", self.cluster.url("bench_src")])
        self.record("pg_dump -Fd -j2", wall, rss, cpu)
        self.sizes["pg_dump -Fd -j2"] = sum(p.stat().st_size for p in path.iterdir())

    def backup(self, job, label):
        wall, rss, cpu, out = timed(self.pgkeep_for(job, "backup", job), env=self.env,
                                    stdout=subprocess.PIPE)
        backup_id = out.strip().splitlines()[-1]
        self.ids[job] = backup_id
        self.record(label, wall, rss, cpu)
        # A dump job counts its tables in the dump's snapshot while pg_dump runs; it logs how
        # long that took (the part of the run that overlaps the dump).
        plain = re.sub(r"\x1b\[[0-9;]*m", "", timed.stderr or "")
        counted = re.search(r"counted every table's rows.*seconds=([\d.]+)", plain)
        if counted:
            log(f"  {'':<34} counting the tables took {float(counted.group(1)):.2f} s of it")
        listed = json.loads(subprocess.run(self.pgkeep_for(job, "list", "--job", job, "--json"),
                                           env=self.env, check=True, capture_output=True,
                                           text=True).stdout)
        self.sizes[label] = next(b["bytes"] for b in listed if b["id"] == backup_id)
        return wall, rss

    def pg_restore(self):
        self.cluster.recreate("restore_pg")
        wall, rss, cpu, _ = timed(["pg_restore", "-j2", "-d", self.cluster.url("restore_pg"),
                                   str(self.out / "bench.dir")])
        self.record("pg_restore -j2 (directory dump)", wall, rss, cpu)

    def pgkeep_restore(self, job, label, db):
        self.cluster.recreate(db)
        wall, rss, cpu, _ = timed(self.pgkeep_for(job, "restore", self.ids[job], "--job", job,
                                              "--target", self.cluster.url(db), "--jobs", "2"),
                                  env=self.env)
        self.record(label, wall, rss, cpu)

    def rounds(self):
        steps = [("floor", self.floor), ("pg_dump", self.pg_dump_fc)]
        for kind in ("dump", "export"):
            for c in self.codecs:
                steps.append((kind, lambda kind=kind, c=c: self.backup(
                    self.job(kind, c), self.label(f"pgkeep backup ({kind} job)", c))))
        steps += [("pg_dump_fd", self.pg_dump_fd), ("pg_restore", self.pg_restore)]
        for kind in ("export", "dump"):
            for c in self.codecs:
                steps.append((f"restore_{kind}", lambda kind=kind, c=c: self.pgkeep_restore(
                    self.job(kind, c), self.label(f"pgkeep restore ({kind}, --jobs 2)", c),
                    f"restore_{kind}_{c.replace(':', '_').replace('+', '_')}")))
        only = set(self.a.only.split(",")) if self.a.only else None
        for r in range(1, self.a.rounds + 1):
            log(f"round {r}/{self.a.rounds} (load {os.getloadavg()[0]:.2f})")
            for key, step in steps:
                if only and key not in only and not (key == "pg_dump_fd" and "pg_restore" in only):
                    continue
                self.settle()
                step()

    # ---- checks ----
    def fingerprint(self, db):
        rows = {}
        for t in TABLES:
            rows[t] = self.cluster.psql(
                db, f"SELECT count(*) || ' ' || coalesce(sum(('x' || left(md5(x::text), 16))"
                    f"::bit(64)::bigint::numeric), 0) FROM bench.{t} x")
        rows["sequences"] = self.cluster.psql(
            db, "SELECT string_agg(last_value::text, ',' ORDER BY sequencename) FROM pg_sequences "
                "WHERE schemaname = 'bench'")
        rows["indexes"] = self.cluster.psql(
            db, "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
                "WHERE schemaname = 'bench'")
        rows["constraints"] = self.cluster.psql(
            db, "SELECT string_agg(conname::text || ':' || contype::text, ',' ORDER BY conname) "
                "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE nspname = 'bench'")
        return rows

    def verify(self):
        source = self.fingerprint("bench_src")
        ok = True
        restored = [f"restore_{kind}_{c.replace(':', '_').replace('+', '_')}" for kind in ("export", "dump")
                    for c in self.codecs]
        for db in restored + ["restore_pg"]:
            if not self.cluster.exists(db):
                continue
            got = self.fingerprint(db)
            bad = [k for k in source if source[k] != got[k]]
            if bad:
                ok = False
                for k in bad:
                    log(f"MISMATCH in {db}: {k}: source {source[k]!r} restored {got[k]!r}")
            else:
                log(f"{db}: {len(TABLES)} tables, sequences, indexes and constraints equal the source")
        self.verified = ok
        self.row_counts = {t: int(source[t].split()[0]) for t in TABLES}

    def ten_x(self):
        self.ensure_db("bench_src10", self.a.scale * 10)
        for kind in ("dump", "export"):
            for c in self.codecs:
                self.settle()
                self.backup(self.job(f"{kind}10", c),
                            self.label(f"pgkeep backup ({kind} job), 10x", c))

    # ---- report ----
    def best(self, name):
        runs = self.results.get(name)
        return min(runs, key=lambda r: r[0]) if runs else None

    def report(self):
        raw = int(self.cluster.psql("bench_src", "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c "
                                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE nspname = 'bench' AND relkind = 'r'"))
        fc = self.best("pg_dump -Fc")
        pr = self.best("pg_restore -j2 (directory dump)")
        fc_size = self.sizes.get("pg_dump -Fc")
        lines = []
        lines.append(f"| command | best of {self.a.rounds} (s) | ratio | stored (MB) | size ratio "
                     f"| peak RSS (MB) | CPU (s) |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        each = lambda text: [self.label(text, c) for c in self.codecs]
        order = (["floor: COPY all tables > /dev/null", "pg_dump -Fc"]
                 + each("pgkeep backup (dump job)") + each("pgkeep backup (export job)")
                 + ["pg_dump -Fd -j2", "pg_restore -j2 (directory dump)"]
                 + each("pgkeep restore (export, --jobs 2)") + each("pgkeep restore (dump, --jobs 2)")
                 + each("pgkeep backup (dump job), 10x") + each("pgkeep backup (export job), 10x"))
        for name in order:
            b = self.best(name)
            if not b:
                continue
            wall, rss, cpu = b
            base = pr if "restore" in name else fc
            ratio = f"{wall / base[0]:.2f}x" if base and "10x" not in name else ""
            size = self.sizes.get(name)
            size_s = f"{size / 1e6:.1f}" if size else ""
            size_r = f"{size / fc_size:.2f}x" if size and fc_size and "10x" not in name else ""
            peak = max(r[1] for r in self.results[name])
            lines.append(f"| {name} | {wall:.2f} | {ratio} | {size_s} | {size_r} | {peak:.0f} "
                         f"| {cpu:.1f} |")
        table = "\n".join(lines)
        raw_copy = self.copy_text_bytes()
        mem = ""
        for kind in ("dump", "export"):
            for c in self.codecs:
                one = self.results.get(self.label(f"pgkeep backup ({kind} job)", c))
                ten = self.results.get(self.label(f"pgkeep backup ({kind} job), 10x", c))
                if one and ten:
                    a, b = max(r[1] for r in one), max(r[1] for r in ten)
                    mem += (f"memory, {kind} job, {c}: peak RSS {a:.0f} MB at 1x, {b:.0f} MB "
                            f"at 10x ({(b - a) / a * 100:+.0f}%)\n")
        meta = (f"database: scale {self.a.scale}, {raw_copy / 1e6:.0f} MB of COPY text, "
                f"{raw / 1e6:.0f} MB of heap; rows {self.row_counts}\n"
                f"pgkeep: compression {self.a.compression}, export parallel {self.a.parallel}; "
                f"restores --jobs 2\n"
                f"machine: {os.cpu_count()} cores, {mem_total_gb():.0f} GB RAM, "
                f"{platform.platform()}, PostgreSQL {self.cluster.psql('postgres', 'SHOW server_version')}\n"
                f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
                f"restored data equals the source: {'yes' if self.verified else 'NO'}\n" + mem)
        text = table + "\n\n" + meta
        print(text)
        (self.work / "results.md").write_text(text)
        (self.work / "results.json").write_text(json.dumps(
            {"results": self.results, "sizes": self.sizes, "args": vars(self.a)}, indent=1))
        if self.a.workdir_is_temp and not self.a.keep:
            log("the work dir is removed at exit; --workdir DIR --keep keeps results and databases")
        else:
            log(f"results in {self.work / 'results.md'}")

    def copy_text_bytes(self):
        total = 0
        for t in TABLES:
            p = subprocess.Popen(["psql", "-X", "-q", "-d", self.cluster.url("bench_src"), "-c",
                                  f"COPY bench.{t} TO STDOUT"], stdout=subprocess.PIPE)
            while chunk := p.stdout.read(1 << 20):
                total += len(chunk)
            p.wait()
        return total

    def serve(self):
        env = " ".join(f"{k}={self.env[k]}" for k in
                       ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"))
        print(f"source database: {self.cluster.url('bench_src')}\n"
              f"pgkeep config:   {self.config}\n"
              f"for example:     {env} {self.a.pgkeep} --config {self.config} backup export\n"
              "Ctrl-C (SIGINT) or SIGTERM stops the servers.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        # A second Ctrl-C must not cut the servers' shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def teardown(self):
        self.garage.stop()
        self.cluster.stop()


def mem_total_gb():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0,
                   help="database size; 1.0 is ~460 MB of COPY text (the issue's database)")
    p.add_argument("--quick", action="store_true", help="a small database and one round, to try it out")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ten-x", action="store_true",
                   help="also back up a 10x larger database and compare peak memory (slow)")
    p.add_argument("--workdir", default=None,
                   help="cluster, store and dumps go here (default: a temp dir, removed at the end)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir; a later run with the same --workdir reuses the databases")
    p.add_argument("--pgkeep", default=str(HERE.parent / "target/release/pgkeep"))
    p.add_argument("--garage", default=shutil.which("garage") or
                   str(Path.home() / ".cargo/bin/garage"))
    p.add_argument("--pg-bin", default=None, help="PostgreSQL server binaries (initdb, postgres)")
    p.add_argument("--seed", default="pgkeep-bench-1")
    p.add_argument("--compression", default="gzip",
                   help="the jobs' compression setting, or several separated by commas "
                        "(gzip,zstd) to compare them side by side in the same rounds; a "
                        "setting ending in +age (zstd+age) also encrypts, to a key made here")
    p.add_argument("--parallel", type=int, default=2, help="export job workers")
    p.add_argument("--part-size-mib", type=int, default=None)
    p.add_argument("--parts-in-flight", type=int, default=None)
    p.add_argument("--serve", action="store_true",
                   help="set up (cluster, Garage, database, config), print how to reach them, and "
                        "wait for Ctrl-C: for profiling single commands by hand")
    p.add_argument("--only", default=None,
                   help="comma-separated subset: floor,pg_dump,dump,export,pg_restore,"
                        "restore_export,restore_dump")
    a = p.parse_args()
    if a.quick:
        a.scale = 0.05 if a.scale == 1.0 else a.scale
        a.rounds = 1
    temp = a.workdir is None
    a.workdir_is_temp = temp
    if temp:
        a.workdir = tempfile.mkdtemp(prefix="pgkeep-bench-")
        os.chmod(a.workdir, 0o755)  # the cluster runs as `postgres` and must reach its directory
    for tool in ("/usr/bin/time", a.pgkeep, a.garage):
        if not Path(tool).exists():
            raise SystemExit(f"missing {tool} (bench/run.sh installs and builds what it needs)")
    b = Bench(a)
    try:
        b.setup()
        if a.serve:
            b.serve()
            return
        b.rounds()
        b.verify()
        if a.ten_x:
            b.ten_x()
        b.report()
        if not b.verified:
            sys.exit(1)
    finally:
        b.teardown()
        if temp and not a.keep:
            shutil.rmtree(a.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
