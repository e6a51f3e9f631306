"""gunicorn settings for `make serve`: several worker processes, threads for streaming answers."""
import os
import tempfile

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("SEAM_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("SEAM_THREADS", "4"))
timeout = 300            # a long answer on a slow CPU keeps a request open
accesslog = "-"          # request logs on stdout
raw_env = ["TVM_USE_RUNTIME_LIB=1"]  # workers load TVM's runtime library, not the compiler
os.environ["TVM_USE_RUNTIME_LIB"] = "1"

# Metrics from every worker are summed at /metrics (prometheus_client multiprocess mode).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="seam-metrics-"))


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
