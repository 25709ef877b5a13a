/* pyode's native solver: a plain C ABI for whole solves with a compiled right-hand side.
 *
 * Called from Python through cffi (pyode.native) and from numba's nopython mode (pyode.native.nopython).
 * Every array comes with its length; the solver checks sizes and never reads or writes past them.
 * Functions return PYODE_OK (0) or a negative code; pyode_last_error() then says why (this thread).
 * Trajectories that fail (max steps, step underflow, NaN) do not make the call fail: see pyode_traj_stats.
 *
 * The text between the CDEF markers is what cffi parses: plain declarations only.
 */
#ifndef PYODE_NATIVE_H
#define PYODE_NATIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CDEF BEGIN */
typedef void (*pyode_rhs_fn)(double t, const double* y, double* dy, const double* p);
typedef double (*pyode_event_fn)(double t, const double* y, const double* p);
/* J: row-major n x n, J[i * n + j] = d f_i / d y_j */
typedef void (*pyode_jac_fn)(double t, const double* y, double* J, const double* p);

/* A method as data: an explicit Runge-Kutta method (pyode/_solvers/tableaux.py and its interpolant), or with
 * kind != 0 an implicit one (pyode/_solvers/implicit_tableaux.py):
 *   kind 1, Rosenbrock (transformed form): c = alpha, a = a_ij, b = m, b_err = m_err, ros_c = c_ij (s*s, strictly
 *     lower), ros_d = d, gamma; not FSAL; interp_P (interp_terms = s, degree >= 1) the method's continuous
 *     extension as weights on the increments u_i, y(t0 + theta h) = y0 + sum_i sum_p theta^(p+1) P[p][i] u_i (no
 *     factor h), or interp_degree 0 and interp_terms = s + 1 for the cubic Hermite through (y0, f0), (y1, f1).
 *   kind 2, ESDIRK (stiffly accurate, explicit first stage): a lower triangular with diagonal gamma, fsal = 1,
 *     predictor (s*s strictly lower: the Newton start of stage i from stages j < i) or NULL, interp_P the
 *     cubic Hermite weights on the stages. */
typedef struct pyode_method {
    int32_t num_stages;     /* s, 1..64 */
    int32_t order;          /* order of the propagated solution (the controller's exponent) */
    int32_t fsal;           /* 1: the last stage is f(t0 + h, y1) */
    int32_t interp_degree;  /* rows of interp_P */
    int32_t interp_terms;   /* columns of interp_P: s (FSAL) or s + 1 (term s is f(t0 + h, y1)) */
    int32_t interp_restep;  /* 1: dense output by a fresh step of size theta * h */
    const double* c;        /* (s) */
    const double* a;        /* (s * s) row-major, strictly lower triangular */
    const double* b;        /* (s) */
    const double* b_err;    /* (s) error weights b - b_hat, or NULL for a fixed-grid method */
    const double* interp_P; /* (interp_degree * interp_terms) */
    int32_t kind;           /* 0 explicit RK, 1 Rosenbrock, 2 ESDIRK, 3 Adams, 4 ALF (no tableau: the asynchronous
                               leapfrog of pyode/_solvers/alf.py; options.step_size 0 for one step per output
                               interval; problem.y_event, when given, receives the final v), 5 BDF (no tableau:
                               the variable-order NDF/BDF of pyode/_solvers/bdf.py, adaptive, adams_history its
                               maximum order 1..5, float64, no events) */
    int32_t reserved;
    double gamma;
    const double* ros_c;
    const double* ros_d;
    const double* predictor;
    /* NULL, or (method="auto") the stiff partner of this explicit adaptive method: kind 1 or 2, the same order,
     * its own stiff_partner NULL; this method's last two stages at c = 1. Each trajectory starts with this
     * method and switches to the partner where the problem is stiff, and back (pyode/_solvers/implicit_auto.py,
     * core/auto_switch.h). */
    const struct pyode_method* stiff_partner;
    /* kind 3, Adams on a fixed grid (torchdiffeq's explicit_adams / implicit_adams; pyode/_solvers/fixed_grid.py):
     * the tableau fields are its Runge-Kutta starter's (the steps while fewer than 3 past derivatives are known);
     * adams_history (1..64) past derivatives at most (max_order - 1); adams_ab row k-1 the k Adams-Bashforth
     * weights (adams_history * adams_history); adams_am row k-1 the k + 1 Adams-Moulton weights
     * (adams_history * (adams_history + 1)); max_iters corrector iterations (0: Adams-Bashforth only), each
     * stopping once two agree to options.atol + options.rtol * |dy|. Outputs by linear interpolation.
     * kind 2 on a fixed grid (b_err NULL: torchdiffeq's diagonally implicit set, its implicit first stage
     * written as an explicit stage 0 whose derivative is f0): max_iters Newton iterations per stage (0: 100),
     * each stage solved to a few ulps of the state; a failed solve stops the trajectory (PYODE_NON_FINITE). */
    int32_t adams_history;
    int32_t max_iters;
    const double* adams_ab;
    const double* adams_am;
} pyode_method;

typedef struct pyode_options {
    int64_t struct_size;    /* sizeof(pyode_options) as the caller compiled it */
    double rtol, atol;
    double first_step;      /* > 0: the first step; 0: Hairer's rule */
    double safety, ifactor, dfactor, pcoeff, icoeff, dcoeff, min_step, max_step;
    int64_t max_num_steps;
    double step_size;       /* grid spacing of fixed-grid methods */
    double event_tol;       /* time tolerance of a located event */
    int32_t num_threads;    /* threads over trajectories; 0: all cores */
    int32_t stop_on_sigint; /* 1: a SIGINT (Ctrl-C) during the call stops it like `cancel`; the SIGINT handler
                               in place (Python's) still runs. Only when that handler is a function. */
    const int32_t* cancel;  /* NULL, or a flag another thread sets non-zero to stop the solve (Ctrl-C):
                               unfinished trajectories get status PYODE_CANCELLED */
    const double* step_t;   int64_t num_step_t;  /* times every step lands on (adaptive methods), any order */
    const double* jump_t;   int64_t num_jump_t;  /* the same where f is discontinuous */
    int32_t controller;     /* PYODE_CONTROLLER_*: 0 the method's default (predictive for the stiff kinds, PID for
                               explicit ones), 1 PID only, 2 PID with Gustafsson's predictive bound */
    int32_t reserved_options;
} pyode_options;

typedef struct pyode_problem {
    int64_t num_traj;       /* M >= 1 trajectories */
    int64_t n;              /* state size */
    int64_t num_params;     /* k, parameters per trajectory */
    int64_t params_stride;  /* 0: one parameter vector shared by all; k: one row each */
    int64_t num_times;      /* T >= 1 output times, strictly monotonic (t[0] is the initial time) */
    const double* y0;       int64_t y0_len;      /* (M, n) */
    const double* params;   int64_t params_len;  /* (k) or (M, k); may be NULL when k == 0 */
    const double* t;        int64_t t_len;       /* (T) */
    double* ys;             int64_t ys_len;      /* (T, M, n) output; NaN where a trajectory stopped */
    double* y_event;        int64_t y_event_len; /* (M, n) state at the event, or NULL */
} pyode_problem;

/* status of a trajectory */
enum { PYODE_SUCCESS = 0, PYODE_MAX_STEPS = 1, PYODE_STEP_UNDERFLOW = 2, PYODE_NON_FINITE = 3, PYODE_EVENT = 4,
       PYODE_CANCELLED = 5 };
/* return codes */
enum { PYODE_OK = 0, PYODE_EINVAL = -1, PYODE_ENOMEM = -2 };

typedef struct pyode_traj_stats {
    int32_t status;
    int32_t n_unconverged;  /* Adams: steps whose corrector did not converge (the oldest derivative dropped) */
    double t_reached;       /* caller's time */
    double event_t;         /* caller's time of the event, NaN when none */
    int64_t n_accepted, n_rejected, n_feval;
} pyode_traj_stats;

int32_t pyode_native_abi_version(void);
const char* pyode_last_error(void);

/* Solves every trajectory; stats: (M) entries, stats_len >= M. event may be NULL. */
int32_t pyode_solve(const pyode_method* method, const pyode_options* options, pyode_rhs_fn rhs,
                    pyode_event_fn event, const pyode_problem* problem, pyode_traj_stats* stats,
                    int64_t stats_len);

/* pyode_solve with a Jacobian for the implicit kinds: jac NULL means forward differences (n extra evaluations
 * of rhs per Jacobian). The Jacobian is dense, its matrix factored by LU with partial pivoting (small n). */
int32_t pyode_solve_jac(const pyode_method* method, const pyode_options* options, pyode_rhs_fn rhs,
                        pyode_jac_fn jac, pyode_event_fn event, const pyode_problem* problem,
                        pyode_traj_stats* stats, int64_t stats_len);

/* The same with only numbers and flat arrays, for callers that cannot build structs (numba's nopython
 * mode): `packed` holds the method and options as pyode.native.nopython.pack() lays them out; rhs and
 * event are function addresses (event 0: none); stats_out is (M, 6) doubles: status, t_reached, event_t,
 * n_accepted, n_rejected, n_feval. */
int32_t pyode_solve_packed(const double* packed, int64_t packed_len, uint64_t rhs, uint64_t event,
                           int64_t num_traj, int64_t n, int64_t num_params, int64_t params_stride,
                           const double* y0, int64_t y0_len, const double* params, int64_t params_len,
                           const double* t, int64_t t_len, double* ys, int64_t ys_len,
                           double* stats_out, int64_t stats_len);

/* float32 states (the torch path's float32 solves, pyode/_solvers/core_loop.py): the state, stages, outputs
 * and parameters in float, each step computed as pyode's compiled float32 kernels compute it (stage sums in
 * float, tableau weights h * a_ij rounded to float; error norm summed in float per block, across blocks in
 * double); time, step size, tolerances and the controller in double. Explicit methods only (kind 0): the
 * stiff kinds are refused (PYODE_EINVAL). Sizes and checks as pyode_solve's. */
typedef void (*pyode_rhs_f32_fn)(double t, const float* y, float* dy, const float* p);
typedef double (*pyode_event_f32_fn)(double t, const float* y, const float* p);

typedef struct pyode_problem_f32 {
    int64_t num_traj;       /* M >= 1 trajectories */
    int64_t n;              /* state size */
    int64_t num_params;     /* k, parameters per trajectory */
    int64_t params_stride;  /* 0: one parameter vector shared by all; k: one row each */
    int64_t num_times;      /* T >= 1 output times, strictly monotonic (t[0] is the initial time) */
    const float* y0;        int64_t y0_len;      /* (M, n) */
    const float* params;    int64_t params_len;  /* (k) or (M, k); may be NULL when k == 0 */
    const double* t;        int64_t t_len;       /* (T) */
    float* ys;              int64_t ys_len;      /* (T, M, n) output; NaN where a trajectory stopped */
    float* y_event;         int64_t y_event_len; /* (M, n) state at the event, or NULL */
} pyode_problem_f32;

int32_t pyode_solve_f32(const pyode_method* method, const pyode_options* options, pyode_rhs_f32_fn rhs,
                        pyode_event_f32_fn event, const pyode_problem_f32* problem, pyode_traj_stats* stats,
                        int64_t stats_len);
/* CDEF END */

#define PYODE_NATIVE_ABI 7
#define PYODE_CONTROLLER_DEFAULT 0
#define PYODE_CONTROLLER_PID 1
#define PYODE_CONTROLLER_PREDICTIVE 2
#define PYODE_PACKED_VERSION 1  /* header[0] of pyode_solve_packed's array */
#define PYODE_PACKED_HEADER 24

#ifdef __cplusplus
}
#endif

#endif /* PYODE_NATIVE_H */
