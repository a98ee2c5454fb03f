# Sourced by scripts: `heartbeat "what" command args...` runs the command with its
# output streamed, and prints "… still <what> (N s)" whenever it has been quiet for
# 10 s, so a long first build never looks like a hang. Returns the command's status.
heartbeat() {
  local what=$1
  shift
  local started=$SECONDS marker status_file status
  marker=$(mktemp)
  status_file=$(mktemp)
  (
    while sleep 2; do
      local quiet=$(($(date +%s) - $(stat -c %Y "$marker" 2>/dev/null || date +%s)))
      if [ "$quiet" -ge 10 ]; then
        printf '    … still %s (%d s)\n' "$what" $((SECONDS - started))
        touch "$marker"
      fi
    done
  ) &
  local ticker=$!
  { "$@" 2>&1 && echo 0 >"$status_file" || echo $? >"$status_file"; } | while IFS= read -r line; do
    printf '    %s\n' "$line"
    touch "$marker"
  done
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  status=$(cat "$status_file")
  rm -f "$marker" "$status_file"
  return "${status:-1}"
}
