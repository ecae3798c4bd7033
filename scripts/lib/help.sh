# shellcheck shell=bash
# Sourced first thing by the scripts in scripts/: `-h` or `--help` among a script's own
# arguments (those before a `--`) prints its help and exits, before anything is set up:
# scripts/setup may run apt (with sudo's password) and pip for minutes on a new machine.
# The help is the script's header comment; a script run through a Python module gives
# that module's fuller help too, once .venv has it (python -m rig.demo --help, quick).

# help_if_asked SCRIPT [MODULE] -- ARGS...: exits 0 after the help when ARGS ask for it.
# Call it from the checkout (the scripts cd there first).
help_if_asked() {
  local script=$1 module="" arg
  shift
  [ "$1" = -- ] || { module=$1; shift; }
  shift
  for arg; do
    case $arg in
      --) return 0 ;;
      -h | --help)
        script=scripts/${script##*/}
        # The header: the comment lines after the shebang, up to the first that is not one.
        sed -n '2,${/^#/!q;s/^# \{0,1\}//p}' "$script"
        if [ -n "$module" ]; then
          if [ -x .venv/bin/python ]; then
            echo
            exec .venv/bin/python -m "$module" --help
          fi
          echo "Every option: $script --help again, once scripts/setup has made .venv."
        fi
        exit 0
        ;;
    esac
  done
}
