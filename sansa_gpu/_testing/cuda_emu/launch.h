// Launch glue for one kernel file: included after the .cu by the generated wrapper. For each
// template instantiation, CUDA_EMU_EXPORT(i, expr) exports
//   const char* cuda_emu_sig_i()      the C signature, e.g. "i64,*const i64,*f32" (one code per parameter)
//   void cuda_emu_body_i(void** args) the kernel called with args[p] pointing at parameter p's value
// (the same argument-pointer convention as cuLaunchKernel).
#pragma once

#include <string>
#include <type_traits>
#include <utility>

namespace cuda_emu {

template <typename T> struct type_code;
#define CUDA_EMU_CODE(T, s) template <> struct type_code<T> { static std::string get() { return s; } };
CUDA_EMU_CODE(bool, "b8")
CUDA_EMU_CODE(char, "i8")
CUDA_EMU_CODE(signed char, "i8")
CUDA_EMU_CODE(unsigned char, "u8")
CUDA_EMU_CODE(short, "i16")
CUDA_EMU_CODE(unsigned short, "u16")
CUDA_EMU_CODE(int, "i32")
CUDA_EMU_CODE(unsigned int, "u32")
CUDA_EMU_CODE(long, "i64")
CUDA_EMU_CODE(unsigned long, "u64")
CUDA_EMU_CODE(long long, "i64")
CUDA_EMU_CODE(unsigned long long, "u64")
CUDA_EMU_CODE(float, "f32")
CUDA_EMU_CODE(double, "f64")
#undef CUDA_EMU_CODE
template <typename T> struct type_code<T*> {
    static std::string get() {
        return std::string("*") + (std::is_const<T>::value ? "const " : "") + type_code<typename std::remove_cv<T>::type>::get();
    }
};
template <typename T> struct type_code<const T> { static std::string get() { return type_code<T>::get(); } };

template <typename... P>
std::string signature(void (*)(P...)) {
    std::string s;
    ((s += (s.empty() ? "" : ",") + type_code<typename std::remove_cv<P>::type>::get()), ...);
    return s;
}

template <typename... P, std::size_t... I>
__attribute__((no_sanitize_thread)) void invoke_impl(void (*f)(P...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_cv<P>::type*>(args[I])...);
}

template <typename... P>
__attribute__((no_sanitize_thread)) void invoke(void (*f)(P...), void** args) {
    invoke_impl(f, args, std::index_sequence_for<P...>{});
}

}  // namespace cuda_emu

#define CUDA_EMU_EXPORT(i, ...)                                                                     \
    extern "C" __attribute__((visibility("default"), no_sanitize_thread)) const char* cuda_emu_sig_##i() { \
        static const std::string s = ::cuda_emu::signature(&__VA_ARGS__);                          \
        return s.c_str();                                                                           \
    }                                                                                               \
    extern "C" __attribute__((visibility("default"), no_sanitize_thread)) void cuda_emu_body_##i(void** args) { \
        ::cuda_emu::invoke(&__VA_ARGS__, args);                                                     \
    }
