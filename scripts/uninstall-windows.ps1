<#
.SYNOPSIS
Removes peersync for the current Windows user: stops and deletes the logon task and removes the
program. Data and keys are kept.

.DESCRIPTION
Runs `peersync service uninstall` (which ends and deletes the task peersync-<user>), or deletes
the task with schtasks when the program is already gone, then removes the virtual environment
in %LOCALAPPDATA%\peersync\venv. The state folder (identity, keys, indexes, versions; by default
%LOCALAPPDATA%\peersync) and the stores' folders are kept: installing again picks up where it
left off. No administrator rights are needed.

.PARAMETER Venv
The virtual environment to remove (default: %LOCALAPPDATA%\peersync\venv).
#>
[CmdletBinding()]
param(
    [string]$Venv = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$dataDir = Join-Path $env:LOCALAPPDATA 'peersync'
if (-not $Venv) { $Venv = Join-Path $dataDir 'venv' }
$taskName = 'peersync-' + ($env:USERNAME -replace '[^A-Za-z0-9._-]', '_')

$peersync = Join-Path $Venv 'Scripts\peersync.exe'
$removed = $false
if (Test-Path $peersync) {
    & $peersync service uninstall
    $removed = ($LASTEXITCODE -eq 0)
}
if (-not $removed) {
    # The program is gone or broken: remove the task by hand.
    & schtasks /Query /TN $taskName *> $null
    if ($LASTEXITCODE -eq 0) {
        & schtasks /End /TN $taskName *> $null
        & schtasks /Delete /TN $taskName /F
        if ($LASTEXITCODE -ne 0) { Write-Warning "could not delete the task $taskName; delete it in Task Scheduler." }
    }
    $copy = Join-Path $dataDir 'service\peersync-task.xml'
    if (Test-Path $copy) { Remove-Item -Force $copy }
}

if (Test-Path $Venv) {
    Write-Host "Removing $Venv"
    # The service's pythonw.exe may take a moment to exit and release its files.
    for ($try = 1; $try -le 10; $try++) {
        try {
            Remove-Item -Recurse -Force $Venv
            break
        }
        catch {
            if ($try -eq 10) { throw }
            Start-Sleep -Seconds 2
        }
    }
}

$kept = if ($env:PEERSYNC_HOME) { $env:PEERSYNC_HOME } else { $dataDir }
Write-Host "peersync is uninstalled. Data and keys are kept in $kept."
