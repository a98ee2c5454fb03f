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
    while sleep 10; do
      if [ -n "$(find "$marker" -mmin -0.15 2>/dev/null)" ]; then continue; fi
      printf '    … still %s (%d s)\n' "$what" $((SECONDS - started))
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
