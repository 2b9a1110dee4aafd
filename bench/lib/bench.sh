# Shared by the bench/*.sh scripts (sourced): ports, waiting for servers with a clear error, timing, and
# per-process CPU and peak RSS read from /proc.

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL WHAT LOG PID: polls URL until it answers 2xx; fails with WHAT, the last error and the
# log's tail when the process exits or 30 s pass (never a bare curl error later in the run).
wait_http() {
  local url=$1 what=$2 log=$3 pid=${4:-} err=""
  for _ in $(seq 1 300); do
    if err=$(curl -fsS -o /dev/null "$url" 2>&1); then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "error: $what exited before it answered $url; its log ($log) ends with:" >&2
      tail -n 20 "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "error: $what did not answer $url within 30 s (last: $err); its log ($log) ends with:" >&2
  tail -n 20 "$log" >&2; exit 1
}

# cpu_ticks PID: user + system CPU of the process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# cpu_seconds TICKS_BEFORE TICKS_AFTER
cpu_seconds() { awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }'; }
# peak_rss_mb PID: the process's peak resident set so far.
peak_rss_mb() { echo $(( $(awk '/VmHWM/ { print $2 }' "/proc/$1/status") / 1024 )); }
