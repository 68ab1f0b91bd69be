# Sourced by the bench scripts: a scratch folder and a transferd on loopback.
#
#   source "$root/bench/serve.sh"   # sets work (a temp folder, removed on exit)
#   start_transferd                 # $bin/transferd on $work/data; exports
#                                   # TRANSFERD_ADDR once it is healthy
# The server is stopped and the folder removed when the script exits.
work=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

start_transferd() {
  mkdir -p "$work/data/weights"
  "$bin/transferd" --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/server.log" 2>&1 &
  server_pid=$!
  local port=
  for _ in $(seq 1 100); do
    port=$(grep -oE '\(port [0-9]+\)' "$work/server.log" | head -1 | grep -oE '[0-9]+' || true)
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  [[ -n "$port" ]] || { cat "$work/server.log" >&2; exit 1; }
  export TRANSFERD_ADDR=127.0.0.1:$port
  "$bin/transferctl" server health --wait 60 >/dev/null
}
