/*
 * disasm.c - `onramp check --dump`: a listing of a compiled rule set (matchers, segments,
 * triggers, the per-user profile layout) and every chunk of bytecode, one instruction a
 * line, named from the same opcode table the compiler and VM use.
 */
#include "rules_int.h"

#include <stdio.h>

static const char *const op_names[] = {
#define OP(name, doc) #name,
#include "opcodes.h"
#undef OP
};

static const char *chunk_owner(const rule_set *rs, int chunk, char *buf, size_t cap)
{
    for (int i = 0; i < rs->nmatchers; i++)
        if (rs->matchers[i].where == chunk) {
            snprintf(buf, cap, "label %s where", rs->matchers[i].display);
            return buf;
        }
    for (int i = 0; i < rs->nsegments; i++) {
        const rule_segment *s = &rs->segments[i];
        if (s->live == chunk) {
            snprintf(buf, cap, "segment %s when", s->name);
            return buf;
        }
        for (int k = 0; k < s->nclauses; k++)
            if (s->clauses[k].when == chunk) {
                snprintf(buf, cap, "segment %s %s", s->name,
                         s->clauses[k].enter ? "enter" : "exit");
                return buf;
            }
    }
    for (int i = 0; i < rs->ntriggers; i++) {
        if (rs->triggers[i].where == chunk) {
            snprintf(buf, cap, "trigger %s where", rs->triggers[i].name);
            return buf;
        }
        if (rs->triggers[i].when == chunk) {
            snprintf(buf, cap, "trigger %s when", rs->triggers[i].name);
            return buf;
        }
    }
    snprintf(buf, cap, "?");
    return buf;
}

static void dump_ins(const rule_set *rs, int pc, onr_buf *out)
{
    const rule_ins *in = &rs->code[pc];
    onr_buf_printf(out, "  %04d  %-18s", pc, op_names[in->op]);
    switch ((rule_op)in->op) {
    case OP_CONST:
        onr_buf_printf(out, "%d  ; ", in->a);
        rval_format(rs, &rs->consts[in->a], out);
        break;
    case OP_PROP:
        onr_buf_printf(out, "%d  ; props.%s", in->a, rs->schema.props[in->a]);
        break;
    case OP_TRAIT:
        onr_buf_printf(out, "%d  ; trait.%s", in->a, rs->schema.traits[in->a]);
        break;
    case OP_COUNT:
    case OP_FIRST:
    case OP_LAST:
    case OP_SINCE:
        onr_buf_printf(out, "%d  ; %s", in->a, rs->matchers[in->a].display);
        break;
    case OP_COUNT_WITHIN:
        onr_buf_printf(out, "%d  ; %s within %lldms", in->a,
                       rs->matchers[rs->windows[in->a].matcher].display,
                       (long long)rs->windows[in->a].within_ms);
        break;
    case OP_IN_SEGMENT:
        onr_buf_printf(out, "%d  ; %s", in->a, rs->segments[in->a].name);
        break;
    case OP_JUMP_IF_FALSE:
    case OP_JUMP_IF_TRUE:
    case OP_JUMP_IF_NOT_NULL:
        onr_buf_printf(out, "-> %04d", in->a);
        break;
    case OP_PATH_ENDS:
    case OP_PATH_CONTAINS:
    case OP_IN: {
        rval v = {.t = RT_LIST};
        v.u.list = (uint32_t)(in->a & 0xffffff);
        onr_buf_printf(out, "%d  ; %s", in->a & 0xffffff, in->a >> 24 ? "not " : "");
        rval_format(rs, &v, out);
        break;
    }
    case OP_SEQ:
        onr_buf_printf(out, "%d", in->a);
        break;
    default:
        break;
    }
    switch ((rule_op)in->op) {
    case OP_EQ:
    case OP_NE:
    case OP_LT:
    case OP_LE:
    case OP_GT:
    case OP_GE:
    case OP_STARTS_WITH:
    case OP_ENDS_WITH:
    case OP_CONTAINS:
    case OP_TRUTHY:
        onr_buf_printf(out, "; %s", rs->nodes[in->b].text);
        break;
    default:
        break;
    }
    onr_buf_putc(out, '\n');
}

void rule_dump(const rule_set *rs, onr_buf *out)
{
    onr_buf_printf(out, "; %s: %d matchers, %d segments, %d triggers, %d destinations\n", rs->path,
                   rs->nmatchers, rs->nsegments, rs->ntriggers, rs->ndests);
    onr_buf_printf(out, "; profile: %zu bytes per user\n", rs->layout.size);
    onr_buf_puts(out, "\nmatchers:\n");
    for (int i = 0; i < rs->nmatchers; i++) {
        const rule_matcher *m = &rs->matchers[i];
        onr_buf_printf(out, "  m%-3d %-32s", i, m->display);
        if (m->off_count >= 0)
            onr_buf_printf(out, " count@%d", m->off_count);
        if (m->off_first >= 0)
            onr_buf_printf(out, " first@%d", m->off_first);
        if (m->off_last >= 0)
            onr_buf_printf(out, " last@%d", m->off_last);
        if (m->where >= 0)
            onr_buf_printf(out, " where=chunk%d", m->where);
        onr_buf_putc(out, '\n');
    }
    if (rs->nsegments)
        onr_buf_puts(out, "\nsegments:\n");
    for (int i = 0; i < rs->nsegments; i++) {
        const rule_segment *s = &rs->segments[i];
        onr_buf_printf(out, "  s%-3d %s%s%s\n", i, s->name, s->every_event ? " every-event" : "",
                       s->timed ? " timed" : "");
    }
    if (rs->ntriggers)
        onr_buf_puts(out, "\ntriggers:\n");
    for (int i = 0; i < rs->ntriggers; i++) {
        const rule_trigger *t = &rs->triggers[i];
        onr_buf_printf(out, "  t%-3d %s: %s\n", i, t->name, t->describe);
    }
    onr_buf_puts(out, "\ncode:\n");
    for (int c = 0; c < rs->nchunks; c++) {
        char owner[256];
        onr_buf_printf(out, "chunk%d:  ; %s\n", c, chunk_owner(rs, c, owner, sizeof(owner)));
        int end = c + 1 < rs->nchunks ? rs->chunks[c + 1] : rs->ncode;
        for (int pc = rs->chunks[c]; pc < end; pc++)
            dump_ins(rs, pc, out);
    }
}

uint64_t rule_layout_fingerprint(const rule_set *rs)
{
    onr_buf b = {0};
    const rule_layout *L = &rs->layout;
    onr_buf_printf(&b, "layout %zu %d %d %d %d %d %d %d|", L->size, L->off_segments, L->off_bits,
                   L->nbits, L->off_path, L->path_len, L->off_traits, L->ntraits);
    for (int i = 0; i < rs->nmatchers; i++)
        onr_buf_printf(&b, "m %s %d %d %d|", rs->matchers[i].display, rs->matchers[i].off_count,
                       rs->matchers[i].off_first, rs->matchers[i].off_last);
    for (int i = 0; i < rs->nsegments; i++)
        onr_buf_printf(&b, "s %s|", rs->segments[i].name);
    for (int i = 0; i < rs->ntriggers; i++) {
        const rule_trigger *t = &rs->triggers[i];
        onr_buf_printf(&b, "t %s %d %lld %d %d %d %d %d|", t->name, (int)t->limit,
                       (long long)t->limit_ms, t->off_last_fire, t->bit_fired, t->bit_idle,
                       t->bit_once, t->off_pending);
    }
    for (int i = 0; i < rs->nwindows; i++)
        onr_buf_printf(&b, "w %d %lld %d %d|", rs->windows[i].matcher,
                       (long long)rs->windows[i].within_ms, rs->windows[i].cap, rs->windows[i].off);
    for (int i = 0; i < rs->nseqs; i++) {
        onr_buf_printf(&b, "q %lld %d", (long long)rs->seqs[i].within_ms, rs->seqs[i].off);
        for (int k = 0; k < rs->seqs[i].nsteps; k++)
            onr_buf_printf(&b, " %d", rs->seqs[i].steps[k]);
        onr_buf_putc(&b, '|');
    }
    for (uint32_t i = 0; i < rs->schema.ntraits; i++)
        onr_buf_printf(&b, "r %s|", rs->schema.traits[i]);
    uint64_t h = onr_hash64(b.data, b.len, 0x6c61796f7574);
    onr_buf_free(&b);
    return h;
}
