@echo off
rem Set up fedspec in .venv on Windows, with CUDA torch for an NVIDIA GPU (e.g. GTX 1660 Ti).
rem   setup_windows.bat          the package, CUDA torch (CPU fallback), the offline text tasks
rem   setup_windows.bat --dev    the same plus the test tools
setlocal
cd /d "%~dp0"

set EXTRAS=text
if "%1"=="--dev" set EXTRAS=text,dev

where py >nul 2>nul
if %ERRORLEVEL%==0 (set PY=py -3) else (set PY=python)
%PY% -c "import sys; sys.exit(sys.version_info < (3, 10))"
if errorlevel 1 (
  echo error: fedspec needs Python 3.10 or newer; install it from python.org and run this again
  exit /b 1
)
if not exist .venv\Scripts\python.exe %PY% -m venv .venv
set VPY=.venv\Scripts\python.exe
%VPY% -m pip install --quiet --upgrade pip

rem A GTX 1660 Ti (Turing, sm_75) runs the CUDA 12.6 builds.  If the CUDA wheel
rem cannot be installed, fall back to the CPU build so that fedspec still runs.
if defined FEDSPEC_TORCH (
  %VPY% -m pip install --quiet %FEDSPEC_TORCH%
) else (
  %VPY% -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cu126
  if errorlevel 1 (
    echo CUDA build of torch could not be installed; installing the CPU build instead
    %VPY% -m pip install --quiet torch
  )
)
%VPY% -m pip install --quiet -e ".[%EXTRAS%]"
if errorlevel 1 exit /b 1

%VPY% -c "import torch; ok = torch.cuda.is_available(); print('fedspec ready: torch', torch.__version__, '- CUDA usable:', ok, '(' + torch.cuda.get_device_name(0) + ')' if ok else '- training on CPU (no usable CUDA: check the NVIDIA driver)')"
endlocal
