# vibest-pty shell integration for bash (OSC 133 marks + OSC 7 cwd).
#
# How it is loaded: the daemon starts `bash --posix` with ENV pointing here (see shell_integration/__init__.py).
# An interactive bash in POSIX mode reads $ENV and no other startup file, so this file first leaves POSIX mode
# and replays bash's own startup rules (INVOCATION in bash(1)): /etc/profile and the first of ~/.bash_profile,
# ~/.bash_login, ~/.profile for a login shell, unless --noprofile; /etc/bash.bashrc and ~/.bashrc (or the
# --rcfile) otherwise, unless --norc. Then it adds its hooks around whatever the user's files set up.
#
# Marks (every one carries aid=<nonce>, the per-session secret the daemon checks; output that prints a mark
# without it is ignored):
#   OSC 133;A;aid=N          prompt start (in PS1)          OSC 133;B;aid=N   prompt end, input starts (in PS1)
#   OSC 133;C;aid=N;cmdline_url=ENC   command starts (PS0)  OSC 133;D;S;aid=N command ended with status S
#   OSC 7;file://HOST/PATH   current directory, before each prompt when it changed

if [[ "$-" != *i* ]]; then builtin return; fi

if [[ -n "${VIBEST_PTY_BASH_INJECT+x}" ]]; then
    builtin declare __vpty_flags="$VIBEST_PTY_BASH_INJECT"
    builtin unset ENV VIBEST_PTY_BASH_INJECT
    if [[ -n "${VIBEST_PTY_BASH_ENV+x}" ]]; then
        builtin export ENV="$VIBEST_PTY_BASH_ENV"
        builtin unset VIBEST_PTY_BASH_ENV
    fi
    # --posix also turned on inherit_errexit, which `set +o posix` does not undo.
    builtin set +o posix
    builtin shopt -u inherit_errexit 2>/dev/null
    # In POSIX mode the default history file is ~/.sh_history; the daemon exported HISTFILE=~/.bash_history
    # (bash's usual default) when the user had none, and it must not leak to children as an export.
    if [[ -n "${VIBEST_PTY_BASH_HISTFILE+x}" ]]; then
        builtin export -n HISTFILE
        builtin unset VIBEST_PTY_BASH_HISTFILE
    fi
    if builtin shopt -q login_shell; then
        if [[ "$__vpty_flags" != *" --noprofile "* ]]; then
            [[ -r /etc/profile ]] && builtin source /etc/profile
            for __vpty_f in "$HOME/.bash_profile" "$HOME/.bash_login" "$HOME/.profile"; do
                if [[ -r "$__vpty_f" ]]; then builtin source "$__vpty_f"; builtin break; fi
            done
        fi
    elif [[ "$__vpty_flags" != *" --norc "* ]]; then
        # SYS_BASHRC is a build-time choice: Debian/Ubuntu/Arch /etc/bash.bashrc, Void /etc/bash/bashrc.
        for __vpty_f in /etc/bash.bashrc /etc/bash/bashrc; do
            if [[ -r "$__vpty_f" ]]; then builtin source "$__vpty_f"; builtin break; fi
        done
        __vpty_f="${VIBEST_PTY_BASH_RCFILE:-$HOME/.bashrc}"
        [[ -r "$__vpty_f" ]] && builtin source "$__vpty_f"
    fi
    builtin unset __vpty_f __vpty_flags VIBEST_PTY_BASH_RCFILE
fi

# The nonce stays a plain (unexported) shell variable: programs the shell runs do not see it in their env.
__vpty_aid="${VIBEST_PTY_AID-}"
builtin unset VIBEST_PTY_AID
__vpty_running=0
__vpty_last_cwd=""
__vpty_ps1=""
__vpty_none=()

# Percent-encode what would end or corrupt the OSC string (ESC, BEL, CAN, SUB, CR, LF) plus % and ;
# (parameter separators); the daemon decodes %XX. 16 KiB of command line is plenty for an event.
__vpty_enc() {
    builtin local s="${1:0:16384}"
    s="${s//%/%25}"; s="${s//;/%3B}"; s="${s//$'\n'/%0A}"; s="${s//$'\r'/%0D}"
    s="${s//$'\e'/%1B}"; s="${s//$'\a'/%07}"; s="${s//$'\x18'/%18}"; s="${s//$'\x1a'/%1A}"
    builtin printf '%s' "$s"
}

# PS0 is expanded after a line is read and before it runs. It runs in a command substitution (a subshell
# before bash 5.3), so it only prints; the running flag is set by the arithmetic subscript in PS0 itself,
# which is evaluated in the shell proper.
__vpty_preexec() {
    builtin local cmd
    cmd="$(LC_ALL=C HISTTIMEFORMAT='' builtin history 1)"
    # "  42  cmd" or "  42* cmd" (an edited history line)
    [[ "$cmd" =~ ^[[:space:]]*[0-9]+[*[:space:]][[:space:]]?(.*)$ ]] && cmd="${BASH_REMATCH[1]}"
    builtin printf '\e]133;C;aid=%s;cmdline_url=%s\a' "$__vpty_aid" "$(__vpty_enc "$cmd")"
}

# First in PROMPT_COMMAND: sees the command's status before any user hook changes $?, and gives it back.
__vpty_status() {
    builtin local ret=$?
    if [[ "$__vpty_running" == 1 ]]; then
        builtin printf '\e]133;D;%s;aid=%s\a' "$ret" "$__vpty_aid"
        __vpty_running=0
    fi
    if [[ "$__vpty_last_cwd" != "$PWD" ]]; then
        __vpty_last_cwd="$PWD"
        builtin local p="${PWD//%/%25}"
        p="${p// /%20}"; p="${p//#/%23}"; p="${p//\?/%3F}"; p="${p//$'\n'/%0A}"; p="${p//$'\e'/%1B}"; p="${p//$'\a'/%07}"
        builtin printf '\e]7;file://%s%s\a' "${HOSTNAME-}" "$p"
    fi
    builtin return "$ret"
}

# Last in PROMPT_COMMAND: the user's hooks (or a prompt framework) may have rebuilt PS1 and PS0 by now.
__vpty_prompt() {
    builtin local ret=$?
    if [[ "$PS1" != "$__vpty_ps1" ]]; then
        PS1="\[\e]133;A;aid=${__vpty_aid}\a\]${PS1}\[\e]133;B;aid=${__vpty_aid}\a\]"
        __vpty_ps1="$PS1"
    fi
    if [[ "$PS0" != *'__vpty_preexec'* ]]; then
        PS0+='${__vpty_none[__vpty_running=1]-}$(__vpty_preexec)'
    fi
    builtin return "$ret"
}

# Compose with an existing PROMPT_COMMAND, string or (bash >= 5.1) array, keeping its type. The 2>/dev/null
# keeps a nested bash quiet if PROMPT_COMMAND was exported (it inherits the names, not the functions).
if [[ "$(builtin declare -p PROMPT_COMMAND 2>/dev/null)" == "declare -a"* ]]; then
    PROMPT_COMMAND=("__vpty_status 2>/dev/null" "${PROMPT_COMMAND[@]}" "__vpty_prompt 2>/dev/null")
elif [[ -n "${PROMPT_COMMAND-}" ]]; then
    PROMPT_COMMAND="__vpty_status 2>/dev/null"$'\n'"${PROMPT_COMMAND}"$'\n'"__vpty_prompt 2>/dev/null"
else
    PROMPT_COMMAND=$'__vpty_status 2>/dev/null\n__vpty_prompt 2>/dev/null'
fi
