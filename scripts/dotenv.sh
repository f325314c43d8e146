# shellcheck shell=bash
# Sourced by scripts/setup.sh: mc_load_dotenv FILE exports the KEY=VALUE lines of FILE (a .env:
# comments, blank lines, `export KEY=...`, quoted values, CRLF endings) whose KEY is not already
# set: the environment wins over the file, as in pydantic-settings, Compose and dotenv.

mc_load_dotenv() {
  local mc_line mc_name mc_assign
  while IFS= read -r mc_line || [ -n "$mc_line" ]; do
    mc_line="${mc_line%$'\r'}"
    if [[ "$mc_line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)= ]]; then
      mc_name="${BASH_REMATCH[2]}"
      if [ -z "${!mc_name+set}" ]; then
        mc_assign="${mc_line#"${mc_line%%[![:space:]]*}"}"
        if [ -n "${BASH_REMATCH[1]}" ]; then mc_assign="${mc_assign#export}"; fi
        eval "export $mc_assign" || printf 'mock-comms: could not read this line of %s: %s\n' "$1" "$mc_line" >&2
      fi
    fi
  done < "$1"
}
