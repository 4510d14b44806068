<#
.SYNOPSIS
Installs peersync for the current Windows user, without administrator rights, and registers
its logon task.

.DESCRIPTION
Creates a virtual environment in %LOCALAPPDATA%\peersync\venv (with the py launcher, or
python), pip-installs peersync from -Source into it, then runs `peersync service install`:
a Task Scheduler task named peersync-<user> that starts `peersync run` at this user's logon,
without elevation, and restarts it when it fails. With -Store and -Relay it creates the store
if this peer does not keep it yet; with -Invite as well it joins the invited store instead.

Running it again changes nothing (when the install brought new code, the running service is
restarted). Run it as the user who will sync, in their own session: not elevated, not as an
administrator on their behalf.

.PARAMETER Source
What pip installs: a project folder, a wheel, or a requirement. Default: the folder this script
sits in when it holds pyproject.toml or a peersync-*.whl, else the checkout around scripts\.

.PARAMETER Store
The folder to keep in sync (needs -Relay).

.PARAMETER Relay
This machine's relay folder, inside the cloud client's folder (for example "$env:OneDrive\peersync").

.PARAMETER Invite
An invite code from `peersync invite` on another peer: join that store (needs -Store and -Relay).

.PARAMETER Name
The new store's name when -Store creates one (default: the folder's name).

.PARAMETER Python
The Python used to create the virtual environment (default: `py -3`, else `python`).

.PARAMETER Venv
Where the virtual environment goes (default: %LOCALAPPDATA%\peersync\venv).

.PARAMETER Restart
Restart the service even when nothing changed.

.EXAMPLE
powershell -NoProfile -ExecutionPolicy Bypass -File install-windows.ps1 -Store "$env:USERPROFILE\Quotes" -Relay "$env:OneDrive\peersync" -Invite PSYNC1...

.NOTES
Extra pip arguments (an internal index, --no-index --find-links DIR ...) go in the environment
variable PEERSYNC_PIP_ARGS.
#>
[CmdletBinding()]
param(
    [string]$Source = '',
    [string]$Store = '',
    [string]$Relay = '',
    [string]$Invite = '',
    [string]$Name = '',
    [string]$Python = '',
    [string]$Venv = '',
    [switch]$Restart
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Fail([string]$Message) {
    Write-Host "install-windows.ps1: $Message" -ForegroundColor Red
    exit 2
}

if (($Store -and -not $Relay) -or ($Relay -and -not $Store)) { Fail '-Store and -Relay go together.' }
if ($Invite -and -not $Store) { Fail '-Invite needs -Store and -Relay.' }

$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = New-Object Security.Principal.WindowsPrincipal($identity)
if ($principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Write-Warning ("This PowerShell runs elevated. peersync is installed for $($identity.Name) only; " +
        'run the script in the session of the user who will sync, without elevation.')
}

if (-not $Venv) { $Venv = Join-Path $env:LOCALAPPDATA 'peersync\venv' }

if (-not $Source) {
    $here = $PSScriptRoot
    $wheel = Get-ChildItem -Path $here -Filter 'peersync-*.whl' -File -ErrorAction SilentlyContinue |
        Sort-Object Name | Select-Object -Last 1
    if (Test-Path (Join-Path $here 'pyproject.toml')) { $Source = $here }
    elseif ($wheel) { $Source = $wheel.FullName }
    elseif (Test-Path (Join-Path $here '..\pyproject.toml')) { $Source = (Resolve-Path (Join-Path $here '..')).Path }
    else { Fail 'no peersync source next to this script; give -Source FOLDER, WHEEL or a pip requirement.' }
}

$venvPython = Join-Path $Venv 'Scripts\python.exe'
if (-not (Test-Path $venvPython)) {
    Write-Host "Creating a virtual environment in $Venv"
    New-Item -ItemType Directory -Force -Path (Split-Path $Venv -Parent) | Out-Null
    if ($Python) { $launcher = @($Python) }
    elseif (Get-Command py -ErrorAction SilentlyContinue) { $launcher = @('py', '-3') }
    elseif (Get-Command python -ErrorAction SilentlyContinue) { $launcher = @('python') }
    else { Fail 'Python 3.10 or later was not found; install it for this user (python.org, "Install for me only"), or give -Python PATH.' }
    $exe = $launcher[0]
    $pre = @($launcher | Select-Object -Skip 1)
    & $exe @pre -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'
    if ($LASTEXITCODE -ne 0) { Fail "$($launcher -join ' ') is not Python 3.10 or later (the Store's python alias opens the Store); install Python for this user, or give -Python PATH." }
    & $exe @pre -m venv $Venv
    if ($LASTEXITCODE -ne 0 -or -not (Test-Path $venvPython)) { Fail "could not create the virtual environment in $Venv." }
}

# A digest of the installed files (pip's RECORD): restart the service only when the code changed.
$digestCode = "import hashlib, importlib.metadata as m; d = [x for x in m.distributions() if (x.metadata['Name'] or '').lower() == 'peersync']; print(hashlib.sha256(((d[0].read_text('RECORD') or '') if d else '').encode()).hexdigest())"
$before = & $venvPython -c $digestCode

$pipArgs = @()
if ($env:PEERSYNC_PIP_ARGS) { $pipArgs = @($env:PEERSYNC_PIP_ARGS -split '\s+' | Where-Object { $_ }) }
Write-Host "Installing peersync from $Source"
& $venvPython -m pip install --quiet --disable-pip-version-check @pipArgs $Source
if ($LASTEXITCODE -ne 0) { Fail "pip could not install peersync from $Source (exit status $LASTEXITCODE)." }
$after = & $venvPython -c $digestCode

$serviceArgs = @('service', 'install')
if ($Store) { $serviceArgs += @('--store', $Store, '--relay', $Relay) }
if ($Invite) { $serviceArgs += @('--invite', $Invite) }
if ($Name) { $serviceArgs += @('--name', $Name) }
if ($Restart -or ($before -ne $after)) { $serviceArgs += '--restart' }
& (Join-Path $Venv 'Scripts\peersync.exe') @serviceArgs
exit $LASTEXITCODE
