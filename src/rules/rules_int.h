/*
 * rules_int.h - the rule compiler's insides: tokens, the syntax tree, diagnostics. Only
 * the files of src/rules include this one; everything else goes through rules.h.
 */
#ifndef ONR_RULES_INT_H
#define ONR_RULES_INT_H

#include "rules.h"

/* ---- diagnostics */

#define RULE_MAX_ERRORS 25

typedef struct rdiag {
    const char *path;
    const char *src;
    size_t len;
    onr_buf *out;
    int errors;
} rdiag;

/* Reports an error at line:col spanning width columns (>= 1), with the source line and a
 * caret under it, in the style of a C compiler. */
void rdiag_error(rdiag *d, int line, int col, int width, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void rdiag_note(rdiag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Levenshtein-nearest candidate within a small distance, or NULL: "did you mean" hints. */
const char *rule_suggest(const char *word, const char *const *cands, size_t n);

/* ---- tokens */

typedef enum tok_kind {
    T_EOF = 0,
    T_IDENT,
    T_STRING,
    T_NUMBER,
    T_DURATION,
    T_PERCENT,
    T_LBRACE,
    T_RBRACE,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_COMMA,
    T_COLON,
    T_DOT,
    T_EQ, /* == */
    T_NE, /* != */
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_ASSIGN, /* = */
    T_PLUS,
    T_MINUS,
    T_STAR,
    T_SLASH,
    T_COALESCE, /* ?? */
    T_ERROR,
} tok_kind;

typedef struct token {
    tok_kind kind;
    int line, col;
    uint32_t start, end; /* byte offsets into the source */
    double num;          /* T_NUMBER, T_PERCENT */
    int64_t ms;          /* T_DURATION */
    char *str;           /* T_STRING (unescaped, arena), T_IDENT (arena copy) */
    uint32_t str_len;
} token;

typedef struct lexer {
    const char *src;
    size_t len, pos;
    int line, col;
    onr_arena *arena;
    rdiag *diag;
} lexer;

void lex_init(lexer *lx, const char *src, size_t len, onr_arena *arena, rdiag *diag);
/* Scans the next token. Errors are reported to diag and yield T_ERROR. */
token lex_next(lexer *lx);
const char *tok_kind_name(tok_kind k);

/* ---- syntax tree */

typedef enum node_kind {
    N_NUM,
    N_STR,
    N_DUR,
    N_BOOL,
    N_NULL,
    N_LIST, /* [a, b, ...] */
    N_NAME, /* a builtin or namespaced name: idle, props.plan, session.duration */
    N_CALL, /* count("X", within: 5m) */
    N_NOT,
    N_NEG,
    N_BINARY, /* op is the token kind, or T_IDENT for and/or/in/starts_with/... */
    N_PATH,   /* path ends [...] | path contains [...] */
} node_kind;

typedef enum bin_op {
    B_AND,
    B_OR,
    B_EQ,
    B_NE,
    B_LT,
    B_LE,
    B_GT,
    B_GE,
    B_ADD,
    B_SUB,
    B_MUL,
    B_DIV,
    B_IN,
    B_NOT_IN,
    B_STARTS_WITH,
    B_ENDS_WITH,
    B_CONTAINS,
    B_COALESCE,
} bin_op;

typedef struct ref ref;
typedef struct node node;

/* An event reference: a name ("Feature Used"), a label or kind (ERROR_500, page), or one of
 * the engine's own moments (session start/end, enter/exit of a segment). */
typedef enum ref_kind {
    REF_NAME,
    REF_IDENT, /* resolved by the checker to a label or a kind */
    REF_SESSION_START,
    REF_SESSION_END,
    REF_ENTER,
    REF_EXIT,
} ref_kind;

struct ref {
    ref_kind kind;
    const char *name; /* event name, label/kind identifier or segment name */
    int line, col, width;
    int matcher; /* set by the checker: matcher index (REF_NAME, REF_IDENT) */
    int segment; /* set by the checker: segment index (REF_ENTER/REF_EXIT) */
};

struct node {
    node_kind kind;
    bin_op op;
    uint8_t type; /* rv_type inferred by the checker, RT_ANY for props/traits */
    int line, col;
    uint32_t start, end; /* source span, for explain and carets */
    double num;
    int64_t ms;
    bool b;
    const char *str; /* N_STR value, N_NAME/N_CALL name */
    uint32_t str_len;
    node *a, *b2; /* operands */
    node **items; /* N_LIST items, N_CALL arguments */
    int nitems;
    ref **refs;        /* N_CALL event arguments (parallel to items; NULL when not a ref) */
    int64_t within_ms; /* N_CALL within: */
    bool has_within;
    bool path_ends; /* N_PATH: ends (true) or contains */
    int slot;       /* set by the checker: builtin id / field id / segment / spec index */
    int depth;      /* height of the tree below, bounded by the parser */
};

typedef struct ast_label {
    const char *name;
    int line, col;
    ref **pats; /* REF_NAME or REF_IDENT (kinds) */
    int npats;
    node *where;
} ast_label;

typedef struct ast_clause {
    bool enter; /* enter or exit */
    ref *on;    /* NULL: evaluated on every event and when time changes it */
    node *when; /* NULL: always */
    int line, col;
} ast_clause;

typedef struct ast_segment {
    const char *name;
    int line, col;
    node *live; /* `when E` */
    ast_clause *clauses;
    int nclauses;
} ast_segment;

typedef struct ast_action {
    rule_action_kind kind;
    const char *name;
    int line, col, width;
} ast_action;

typedef struct ast_trigger {
    const char *name;
    int line, col;
    rule_on_kind on;
    ref *ev; /* ON_EVENT / ON_ABSENCE: the event; ON_ENTER/EXIT: the segment */
    node *where;
    ref *unless;    /* ON_ABSENCE */
    int64_t dur_ms; /* ON_IDLE, ON_ABSENCE */
    node *when;
    rule_limit_kind limit;
    int64_t limit_ms;
    int holdout_bp;
    ast_action *actions;
    int nactions;
    bool has_on;
} ast_trigger;

typedef struct ast_setting {
    const char *key;
    token value;
} ast_setting;

typedef struct ast_dest {
    const char *name;
    int line, col;
    ast_setting *settings;
    int nsettings;
} ast_dest;

typedef struct ast_file {
    ast_label *labels;
    int nlabels;
    ast_segment *segments;
    int nsegments;
    ast_trigger *triggers;
    int ntriggers;
    ast_dest *dests;
    int ndests;
} ast_file;

/* Parses src into *file (allocated in arena). Returns the number of errors reported. */
int rule_parse(const char *src, size_t len, onr_arena *arena, rdiag *diag, ast_file *file);

/* ---- checking and compiling */

/* Resolves names, infers and checks types, plans the profile layout. Fills rs's tables. */
int rule_check(ast_file *file, rule_set *rs, rdiag *diag);
/* Emits bytecode for every expression in file into rs. */
int rule_emit(ast_file *file, rule_set *rs, rdiag *diag);

#endif
