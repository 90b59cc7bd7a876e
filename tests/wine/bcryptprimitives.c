/* A stand-in for Windows' bcryptprimitives.dll, for Wine older than 8.13 (Debian 12 has 8.0),
 * which lacks it. Rust's standard library takes its random bytes from ProcessPrng there
 * (HashMap keys, for one); without this DLL every Rust program exits at start with status 53
 * and nothing printed. Only for running the Windows build under Wine in tests (.ci/windows):
 * real Windows 10 and later have the real DLL, and this one is never shipped.
 *
 * ProcessPrng fills the buffer from RtlGenRandom (advapi32's SystemFunction036), Windows'
 * own generator, which takes at most ULONG_MAX bytes a call. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
