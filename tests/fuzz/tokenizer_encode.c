/* tokenizer_encode.c - fuzz driver for encode/decode on arbitrary text.
 * Two tokenizers are compiled in (copies of the seed corpus files
 * corpus/tokenizer_json/bytelevel_bpe.json and sentencepiece_bpe.json) and
 * loaded once. Input byte 0 picks the tokenizer and flags; the rest is the
 * text. Checked: ids in range, streaming == batch decode, decode output is
 * valid UTF-8, and decode(encode(x)) == x where that must hold. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "loraplex/tokenizer.h"

static const char BYTELEVEL_JSON[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[{\"id\":"
    "276,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":"
    "false,\"normalized\":false,\"special\":true},{\"id\":277,\"content\":\"<|im_start|>"
    "\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"sp"
    "ecial\":true},{\"id\":278,\"content\":\"<|im_end|>\",\"single_word\":false,\"lstrip"
    "\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},{\"id\":279,\"conte"
    "nt\":\"<think>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalize"
    "d\":false,\"special\":false}],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{"
    "\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}"
    "| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"
    "\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix"
    "_space\":false,\"trim_offsets\":true,\"use_regex\":false}]},\"post_processor\":{\"ty"
    "pe\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":false,\"use_regex\":tr"
    "ue},\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":t"
    "rue,\"use_regex\":true},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":n"
    "ull,\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":fals"
    "e,\"byte_fallback\":false,\"ignore_merges\":true,\"vocab\":{\"\xC4\x80\":0,\"\xC4"
    "\x81\":1,\"\xC4\x82\":2,\"\xC4\x83\":3,\"\xC4\x84\":4,\"\xC4\x85\":5,\"\xC4\x86\":6,"
    "\"\xC4\x87\":7,\"\xC4\x88\":8,\"\xC4\x89\":9,\"\xC4\x8A\":10,\"\xC4\x8B\":11,\"\xC4"
    "\x8C\":12,\"\xC4\x8D\":13,\"\xC4\x8E\":14,\"\xC4\x8F\":15,\"\xC4\x90\":16,\"\xC4\x91"
    "\":17,\"\xC4\x92\":18,\"\xC4\x93\":19,\"\xC4\x94\":20,\"\xC4\x95\":21,\"\xC4\x96\":2"
    "2,\"\xC4\x97\":23,\"\xC4\x98\":24,\"\xC4\x99\":25,\"\xC4\x9A\":26,\"\xC4\x9B\":27,\""
    "\xC4\x9C\":28,\"\xC4\x9D\":29,\"\xC4\x9E\":30,\"\xC4\x9F\":31,\"\xC4\xA0\":32,\"!\":"
    "33,\"\\\"\":34,\"#\":35,\"$\":36,\"%\":37,\"&\":38,\"'\":39,\"(\":40,\")\":41,\"*\":"
    "42,\"+\":43,\",\":44,\"-\":45,\".\":46,\"/\":47,\"0\":48,\"1\":49,\"2\":50,\"3\":51,"
    "\"4\":52,\"5\":53,\"6\":54,\"7\":55,\"8\":56,\"9\":57,\":\":58,\";\":59,\"<\":60,\"="
    "\":61,\">\":62,\"?\":63,\"@\":64,\"A\":65,\"B\":66,\"C\":67,\"D\":68,\"E\":69,\"F\":"
    "70,\"G\":71,\"H\":72,\"I\":73,\"J\":74,\"K\":75,\"L\":76,\"M\":77,\"N\":78,\"O\":79,"
    "\"P\":80,\"Q\":81,\"R\":82,\"S\":83,\"T\":84,\"U\":85,\"V\":86,\"W\":87,\"X\":88,\"Y"
    "\":89,\"Z\":90,\"[\":91,\"\\\\\":92,\"]\":93,\"^\":94,\"_\":95,\"`\":96,\"a\":97,\"b"
    "\":98,\"c\":99,\"d\":100,\"e\":101,\"f\":102,\"g\":103,\"h\":104,\"i\":105,\"j\":106"
    ",\"k\":107,\"l\":108,\"m\":109,\"n\":110,\"o\":111,\"p\":112,\"q\":113,\"r\":114,\"s"
    "\":115,\"t\":116,\"u\":117,\"v\":118,\"w\":119,\"x\":120,\"y\":121,\"z\":122,\"{\":1"
    "23,\"|\":124,\"}\":125,\"~\":126,\"\xC4\xA1\":127,\"\xC4\xA2\":128,\"\xC4\xA3\":129,"
    "\"\xC4\xA4\":130,\"\xC4\xA5\":131,\"\xC4\xA6\":132,\"\xC4\xA7\":133,\"\xC4\xA8\":134"
    ",\"\xC4\xA9\":135,\"\xC4\xAA\":136,\"\xC4\xAB\":137,\"\xC4\xAC\":138,\"\xC4\xAD\":13"
    "9,\"\xC4\xAE\":140,\"\xC4\xAF\":141,\"\xC4\xB0\":142,\"\xC4\xB1\":143,\"\xC4\xB2\":1"
    "44,\"\xC4\xB3\":145,\"\xC4\xB4\":146,\"\xC4\xB5\":147,\"\xC4\xB6\":148,\"\xC4\xB7\":"
    "149,\"\xC4\xB8\":150,\"\xC4\xB9\":151,\"\xC4\xBA\":152,\"\xC4\xBB\":153,\"\xC4\xBC\""
    ":154,\"\xC4\xBD\":155,\"\xC4\xBE\":156,\"\xC4\xBF\":157,\"\xC5\x80\":158,\"\xC5\x81"
    "\":159,\"\xC5\x82\":160,\"\xC2\xA1\":161,\"\xC2\xA2\":162,\"\xC2\xA3\":163,\"\xC2"
    "\xA4\":164,\"\xC2\xA5\":165,\"\xC2\xA6\":166,\"\xC2\xA7\":167,\"\xC2\xA8\":168,\""
    "\xC2\xA9\":169,\"\xC2\xAA\":170,\"\xC2\xAB\":171,\"\xC2\xAC\":172,\"\xC5\x83\":173,"
    "\"\xC2\xAE\":174,\"\xC2\xAF\":175,\"\xC2\xB0\":176,\"\xC2\xB1\":177,\"\xC2\xB2\":178"
    ",\"\xC2\xB3\":179,\"\xC2\xB4\":180,\"\xC2\xB5\":181,\"\xC2\xB6\":182,\"\xC2\xB7\":18"
    "3,\"\xC2\xB8\":184,\"\xC2\xB9\":185,\"\xC2\xBA\":186,\"\xC2\xBB\":187,\"\xC2\xBC\":1"
    "88,\"\xC2\xBD\":189,\"\xC2\xBE\":190,\"\xC2\xBF\":191,\"\xC3\x80\":192,\"\xC3\x81\":"
    "193,\"\xC3\x82\":194,\"\xC3\x83\":195,\"\xC3\x84\":196,\"\xC3\x85\":197,\"\xC3\x86\""
    ":198,\"\xC3\x87\":199,\"\xC3\x88\":200,\"\xC3\x89\":201,\"\xC3\x8A\":202,\"\xC3\x8B"
    "\":203,\"\xC3\x8C\":204,\"\xC3\x8D\":205,\"\xC3\x8E\":206,\"\xC3\x8F\":207,\"\xC3"
    "\x90\":208,\"\xC3\x91\":209,\"\xC3\x92\":210,\"\xC3\x93\":211,\"\xC3\x94\":212,\""
    "\xC3\x95\":213,\"\xC3\x96\":214,\"\xC3\x97\":215,\"\xC3\x98\":216,\"\xC3\x99\":217,"
    "\"\xC3\x9A\":218,\"\xC3\x9B\":219,\"\xC3\x9C\":220,\"\xC3\x9D\":221,\"\xC3\x9E\":222"
    ",\"\xC3\x9F\":223,\"\xC3\xA0\":224,\"\xC3\xA1\":225,\"\xC3\xA2\":226,\"\xC3\xA3\":22"
    "7,\"\xC3\xA4\":228,\"\xC3\xA5\":229,\"\xC3\xA6\":230,\"\xC3\xA7\":231,\"\xC3\xA8\":2"
    "32,\"\xC3\xA9\":233,\"\xC3\xAA\":234,\"\xC3\xAB\":235,\"\xC3\xAC\":236,\"\xC3\xAD\":"
    "237,\"\xC3\xAE\":238,\"\xC3\xAF\":239,\"\xC3\xB0\":240,\"\xC3\xB1\":241,\"\xC3\xB2\""
    ":242,\"\xC3\xB3\":243,\"\xC3\xB4\":244,\"\xC3\xB5\":245,\"\xC3\xB6\":246,\"\xC3\xB7"
    "\":247,\"\xC3\xB8\":248,\"\xC3\xB9\":249,\"\xC3\xBA\":250,\"\xC3\xBB\":251,\"\xC3"
    "\xBC\":252,\"\xC3\xBD\":253,\"\xC3\xBE\":254,\"\xC3\xBF\":255,\"\xC4\xA0t\":256,\"he"
    "\":257,\"\xC4\xA0" "a\":258,\"in\":259,\"\xC4\xA0the\":260,\"er\":261,\"on\":262,\""
    "\xC4\xA0s\":263,\"ed\":264,\"\xC4\xA0w\":265,\"or\":266,\"\xC4\xA0h\":267,\"ll\":268"
    ",\"\xC4\xA0he\":269,\"hell\":270,\"hello\":271,\"\xC4\xA0hello\":272,\"\xC4\xA0\xC4"
    "\xA0\":273,\"\xC4\x8A\xC4\x8A\":274,\"12\":275},\"merges\":[[\"\xC4\xA0\",\"t\"],[\""
    "h\",\"e\"],[\"\xC4\xA0\",\"a\"],[\"i\",\"n\"],[\"\xC4\xA0t\",\"he\"],[\"e\",\"r\"],["
    "\"o\",\"n\"],[\"\xC4\xA0\",\"s\"],[\"e\",\"d\"],[\"\xC4\xA0\",\"w\"],[\"o\",\"r\"],["
    "\"\xC4\xA0\",\"h\"],[\"l\",\"l\"],[\"\xC4\xA0h\",\"e\"],[\"he\",\"ll\"],[\"hell\",\""
    "o\"],[\"\xC4\xA0\",\"hello\"],[\"\xC4\xA0\",\"\xC4\xA0\"],[\"\xC4\x8A\",\"\xC4\x8A\""
    "],[\"1\",\"2\"]]}}";

static const char SENTENCEPIECE_JSON[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[{\"id\":"
    "0,\"content\":\"<unk>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"no"
    "rmalized\":false,\"special\":true},{\"id\":1,\"content\":\"<s>\",\"single_word\":fal"
    "se,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},{\"id\":"
    "2,\"content\":\"</s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"nor"
    "malized\":false,\"special\":true}],\"normalizer\":{\"type\":\"Sequence\",\"normalize"
    "rs\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},{\"type\":\"Replace\",\"pa"
    "ttern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},\"pre_tokenizer\":null,\""
    "post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"i"
    "d\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[{"
    "\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_"
    "id\":0}},{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":1}},{\"Sequence\":{\"id\":\"B"
    "\",\"type_id\":1}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens"
    "\":[\"<s>\"]}}},\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace"
    "\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFall"
    "back\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop"
    "\":0}]},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"conti"
    "nuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":true,\"byte_fal"
    "lback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x00>\":3,\"<0x01>\":4,"
    "\"<0x02>\":5,\"<0x03>\":6,\"<0x04>\":7,\"<0x05>\":8,\"<0x06>\":9,\"<0x07>\":10,\"<0x"
    "08>\":11,\"<0x09>\":12,\"<0x0A>\":13,\"<0x0B>\":14,\"<0x0C>\":15,\"<0x0D>\":16,\"<0x"
    "0E>\":17,\"<0x0F>\":18,\"<0x10>\":19,\"<0x11>\":20,\"<0x12>\":21,\"<0x13>\":22,\"<0x"
    "14>\":23,\"<0x15>\":24,\"<0x16>\":25,\"<0x17>\":26,\"<0x18>\":27,\"<0x19>\":28,\"<0x"
    "1A>\":29,\"<0x1B>\":30,\"<0x1C>\":31,\"<0x1D>\":32,\"<0x1E>\":33,\"<0x1F>\":34,\"<0x"
    "20>\":35,\"<0x21>\":36,\"<0x22>\":37,\"<0x23>\":38,\"<0x24>\":39,\"<0x25>\":40,\"<0x"
    "26>\":41,\"<0x27>\":42,\"<0x28>\":43,\"<0x29>\":44,\"<0x2A>\":45,\"<0x2B>\":46,\"<0x"
    "2C>\":47,\"<0x2D>\":48,\"<0x2E>\":49,\"<0x2F>\":50,\"<0x30>\":51,\"<0x31>\":52,\"<0x"
    "32>\":53,\"<0x33>\":54,\"<0x34>\":55,\"<0x35>\":56,\"<0x36>\":57,\"<0x37>\":58,\"<0x"
    "38>\":59,\"<0x39>\":60,\"<0x3A>\":61,\"<0x3B>\":62,\"<0x3C>\":63,\"<0x3D>\":64,\"<0x"
    "3E>\":65,\"<0x3F>\":66,\"<0x40>\":67,\"<0x41>\":68,\"<0x42>\":69,\"<0x43>\":70,\"<0x"
    "44>\":71,\"<0x45>\":72,\"<0x46>\":73,\"<0x47>\":74,\"<0x48>\":75,\"<0x49>\":76,\"<0x"
    "4A>\":77,\"<0x4B>\":78,\"<0x4C>\":79,\"<0x4D>\":80,\"<0x4E>\":81,\"<0x4F>\":82,\"<0x"
    "50>\":83,\"<0x51>\":84,\"<0x52>\":85,\"<0x53>\":86,\"<0x54>\":87,\"<0x55>\":88,\"<0x"
    "56>\":89,\"<0x57>\":90,\"<0x58>\":91,\"<0x59>\":92,\"<0x5A>\":93,\"<0x5B>\":94,\"<0x"
    "5C>\":95,\"<0x5D>\":96,\"<0x5E>\":97,\"<0x5F>\":98,\"<0x60>\":99,\"<0x61>\":100,\"<0"
    "x62>\":101,\"<0x63>\":102,\"<0x64>\":103,\"<0x65>\":104,\"<0x66>\":105,\"<0x67>\":10"
    "6,\"<0x68>\":107,\"<0x69>\":108,\"<0x6A>\":109,\"<0x6B>\":110,\"<0x6C>\":111,\"<0x6D"
    ">\":112,\"<0x6E>\":113,\"<0x6F>\":114,\"<0x70>\":115,\"<0x71>\":116,\"<0x72>\":117,"
    "\"<0x73>\":118,\"<0x74>\":119,\"<0x75>\":120,\"<0x76>\":121,\"<0x77>\":122,\"<0x78>"
    "\":123,\"<0x79>\":124,\"<0x7A>\":125,\"<0x7B>\":126,\"<0x7C>\":127,\"<0x7D>\":128,\""
    "<0x7E>\":129,\"<0x7F>\":130,\"<0x80>\":131,\"<0x81>\":132,\"<0x82>\":133,\"<0x83>\":"
    "134,\"<0x84>\":135,\"<0x85>\":136,\"<0x86>\":137,\"<0x87>\":138,\"<0x88>\":139,\"<0x"
    "89>\":140,\"<0x8A>\":141,\"<0x8B>\":142,\"<0x8C>\":143,\"<0x8D>\":144,\"<0x8E>\":145"
    ",\"<0x8F>\":146,\"<0x90>\":147,\"<0x91>\":148,\"<0x92>\":149,\"<0x93>\":150,\"<0x94>"
    "\":151,\"<0x95>\":152,\"<0x96>\":153,\"<0x97>\":154,\"<0x98>\":155,\"<0x99>\":156,\""
    "<0x9A>\":157,\"<0x9B>\":158,\"<0x9C>\":159,\"<0x9D>\":160,\"<0x9E>\":161,\"<0x9F>\":"
    "162,\"<0xA0>\":163,\"<0xA1>\":164,\"<0xA2>\":165,\"<0xA3>\":166,\"<0xA4>\":167,\"<0x"
    "A5>\":168,\"<0xA6>\":169,\"<0xA7>\":170,\"<0xA8>\":171,\"<0xA9>\":172,\"<0xAA>\":173"
    ",\"<0xAB>\":174,\"<0xAC>\":175,\"<0xAD>\":176,\"<0xAE>\":177,\"<0xAF>\":178,\"<0xB0>"
    "\":179,\"<0xB1>\":180,\"<0xB2>\":181,\"<0xB3>\":182,\"<0xB4>\":183,\"<0xB5>\":184,\""
    "<0xB6>\":185,\"<0xB7>\":186,\"<0xB8>\":187,\"<0xB9>\":188,\"<0xBA>\":189,\"<0xBB>\":"
    "190,\"<0xBC>\":191,\"<0xBD>\":192,\"<0xBE>\":193,\"<0xBF>\":194,\"<0xC0>\":195,\"<0x"
    "C1>\":196,\"<0xC2>\":197,\"<0xC3>\":198,\"<0xC4>\":199,\"<0xC5>\":200,\"<0xC6>\":201"
    ",\"<0xC7>\":202,\"<0xC8>\":203,\"<0xC9>\":204,\"<0xCA>\":205,\"<0xCB>\":206,\"<0xCC>"
    "\":207,\"<0xCD>\":208,\"<0xCE>\":209,\"<0xCF>\":210,\"<0xD0>\":211,\"<0xD1>\":212,\""
    "<0xD2>\":213,\"<0xD3>\":214,\"<0xD4>\":215,\"<0xD5>\":216,\"<0xD6>\":217,\"<0xD7>\":"
    "218,\"<0xD8>\":219,\"<0xD9>\":220,\"<0xDA>\":221,\"<0xDB>\":222,\"<0xDC>\":223,\"<0x"
    "DD>\":224,\"<0xDE>\":225,\"<0xDF>\":226,\"<0xE0>\":227,\"<0xE1>\":228,\"<0xE2>\":229"
    ",\"<0xE3>\":230,\"<0xE4>\":231,\"<0xE5>\":232,\"<0xE6>\":233,\"<0xE7>\":234,\"<0xE8>"
    "\":235,\"<0xE9>\":236,\"<0xEA>\":237,\"<0xEB>\":238,\"<0xEC>\":239,\"<0xED>\":240,\""
    "<0xEE>\":241,\"<0xEF>\":242,\"<0xF0>\":243,\"<0xF1>\":244,\"<0xF2>\":245,\"<0xF3>\":"
    "246,\"<0xF4>\":247,\"<0xF5>\":248,\"<0xF6>\":249,\"<0xF7>\":250,\"<0xF8>\":251,\"<0x"
    "F9>\":252,\"<0xFA>\":253,\"<0xFB>\":254,\"<0xFC>\":255,\"<0xFD>\":256,\"<0xFE>\":257"
    ",\"<0xFF>\":258,\"\xE2\x96\x81\":259,\"e\":260,\"h\":261,\"l\":262,\"o\":263,\"w\":2"
    "64,\"r\":265,\"d\":266,\"t\":267,\"\xE2\x96\x81t\":268,\"he\":269,\"\xE2\x96\x81w\":"
    "270,\"or\":271,\"ll\":272,\"\xE2\x96\x81the\":273,\"\xE2\x96\x81h\":274,\"\xE2\x96"
    "\x81wor\":275,\"\xE2\x96\x81worl\":276,\"\xE2\x96\x81world\":277,\"hell\":278,\"hell"
    "o\":279,\"\xE2\x96\x81hello\":280},\"merges\":[\"\xE2\x96\x81 t\",\"h e\",\"\xE2\x96"
    "\x81 w\",\"o r\",\"l l\",\"\xE2\x96\x81t he\",\"\xE2\x96\x81 h\",\"\xE2\x96\x81w or"
    "\",\"\xE2\x96\x81wor l\",\"\xE2\x96\x81worl d\",\"he ll\",\"hell o\",\"\xE2\x96\x81 "
    "hello\"]}}";

static lp_tokenizer *g_tok[2];

static void load_once(void) {
    static int done;
    if (done)
        return;
    done = 1;
    lp_error err;
    if (lp_tokenizer_load_buffer(BYTELEVEL_JSON, sizeof BYTELEVEL_JSON - 1, &g_tok[0], &err) ||
        lp_tokenizer_load_buffer(SENTENCEPIECE_JSON, sizeof SENTENCEPIECE_JSON - 1, &g_tok[1],
                                 &err))
        __builtin_trap(); /* the compiled-in tokenizers must load */
}

static bool valid_utf8(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((u[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    if (size == 0)
        return 0;
    const lp_tokenizer *t = g_tok[data[0] & 1];
    bool special = data[0] & 2, skip = data[0] & 4;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids = NULL;
    size_t n = 0;
    lp_error err;
    if (lp_tokenizer_encode(t, text, len, special, &ids, &n, &err) != LP_OK)
        return 0; /* invalid UTF-8 */
    int32_t vs = lp_tokenizer_vocab_size(t);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vs)
            __builtin_trap();
    char *dec = NULL;
    size_t dec_len = 0;
    if (lp_tokenizer_decode(t, ids, n, skip, &dec, &dec_len, &err) != LP_OK)
        __builtin_trap(); /* ids from encode must decode */
    if (!valid_utf8(dec, dec_len))
        __builtin_trap();
    /* round trip: no added-token text ('<'), no U+2581, and for the
     * byte-level one (NFC normalizer) ASCII only */
    bool plain = memchr(text, '<', len) == NULL;
    for (size_t i = 0; i + 2 < len && plain; i++)
        if (memcmp(text + i, "\xE2\x96\x81", 3) == 0)
            plain = false;
    for (size_t i = 0; i < len && plain && t == g_tok[0]; i++)
        if ((unsigned char)text[i] >= 0x80)
            plain = false;
    if (plain && !skip && !special && (dec_len != len || memcmp(dec, text, len) != 0))
        __builtin_trap(); /* decode(encode(x)) != x */
    lp_detok *d = lp_detok_new(t, skip);
    size_t got = 0;
    for (size_t i = 0; d && i <= n; i++) {
        char *piece = NULL;
        size_t plen = 0;
        int rc = i < n ? lp_detok_push(d, ids[i], &piece, &plen, &err)
                       : lp_detok_flush(d, &piece, &plen, &err);
        if (rc != LP_OK || got + plen > dec_len || memcmp(dec + got, piece, plen) != 0 ||
            !valid_utf8(piece, plen))
            __builtin_trap(); /* streaming must reproduce decode() piece by piece */
        got += plen;
        free(piece);
    }
    if (d && got != dec_len)
        __builtin_trap();
    lp_detok_free(d);
    free(dec);
    free(ids);
    return 0;
}
