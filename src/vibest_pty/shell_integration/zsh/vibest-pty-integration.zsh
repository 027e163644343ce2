# vibest-pty hooks for zsh (OSC 133 marks + OSC 7 cwd), installed after the user's .zshrc.
# Marks carry aid=<nonce>, the per-session secret the daemon checks (see shell_integration/__init__.py):
#   A prompt start and B prompt end (in PS1, so they bracket whatever the prompt draws), C;cmdline_url=ENC
#   before a command runs (preexec), D;STATUS after it (the first precmd hook, before any user hook runs).

'builtin' 'typeset' -g __vpty_aid="${VIBEST_PTY_AID-}"
'builtin' 'unset' 'VIBEST_PTY_AID'
'builtin' 'typeset' -gi __vpty_running=0
'builtin' 'typeset' -g __vpty_last_cwd="" __vpty_ps1=""

# Percent-encode what would end or corrupt the OSC string, plus % and ; (16 KiB is plenty for an event).
__vpty_enc() {
    'builtin' 'local' s="${1[1,16384]}"
    s="${s//\%/%25}"; s="${s//;/%3B}"; s="${s//$'\n'/%0A}"; s="${s//$'\r'/%0D}"
    s="${s//$'\e'/%1B}"; s="${s//$'\a'/%07}"; s="${s//$'\x18'/%18}"; s="${s//$'\x1a'/%1A}"
    'builtin' 'print' -rn -- "$s"
}

__vpty_precmd_status() {
    'builtin' 'local' ret=$?
    if (( __vpty_running )); then
        'builtin' 'printf' '\e]133;D;%s;aid=%s\a' "$ret" "$__vpty_aid"
        __vpty_running=0
    fi
    if [[ "$__vpty_last_cwd" != "$PWD" ]]; then
        __vpty_last_cwd="$PWD"
        'builtin' 'local' p="${PWD//\%/%25}"
        p="${p// /%20}"; p="${p//\#/%23}"; p="${p//\?/%3F}"; p="${p//$'\n'/%0A}"; p="${p//$'\e'/%1B}"
        p="${p//$'\a'/%07}"
        'builtin' 'printf' '\e]7;file://%s%s\a' "${HOST-}" "$p"
    fi
    'builtin' 'return' "$ret"
}

# Last precmd hook: a theme may rebuild PS1 in its own precmd; wrap whatever it left. %{ %} tell zsh the
# marks take no columns.
__vpty_precmd_prompt() {
    if [[ "$PS1" != "$__vpty_ps1" ]]; then
        PS1="%{"$'\e]133;A;aid='"${__vpty_aid}"$'\a'"%}${PS1}%{"$'\e]133;B;aid='"${__vpty_aid}"$'\a'"%}"
        __vpty_ps1="$PS1"
    fi
    # Keep this hook last even if a hook was appended after us since the previous prompt.
    if [[ "${precmd_functions[-1]}" != __vpty_precmd_prompt ]]; then
        precmd_functions=(${precmd_functions:#__vpty_precmd_prompt} __vpty_precmd_prompt)
    fi
}

__vpty_preexec() {
    __vpty_running=1
    'builtin' 'printf' '\e]133;C;aid=%s;cmdline_url=%s\a' "$__vpty_aid" "$(__vpty_enc "$1")"
}

'builtin' 'typeset' -ga precmd_functions preexec_functions
precmd_functions=(__vpty_precmd_status ${precmd_functions:#__vpty_precmd_*} __vpty_precmd_prompt)
preexec_functions=(${preexec_functions:#__vpty_preexec} __vpty_preexec)
