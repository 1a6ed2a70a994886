// A corpus lowbit writes itself, so the built-in default model can be trained anywhere without data:
// short documents drawn from a small probabilistic grammar of simple sentences (characters, objects,
// places), stories whose numbers must add up ("tom has 3 cups. tom gets 4 more. now tom has 7 cups."),
// arithmetic facts ("12 + 7 = 19.") and counting runs. It has local structure (spelling, agreement),
// long-range structure (the main character and object of a document) and computation (sums), so the
// loss keeps falling well below the byte unigram entropy as a model learns.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/rng.hpp"

namespace lowbit::train {

class SyntheticCorpus {
 public:
  explicit SyntheticCorpus(std::uint64_t seed) : rng_(seed) {}

  // One document: 3 to 6 sentences about one main character, ending with '\n'.
  std::string document() {
    const std::string_view hero = pick(kNames);
    std::string_view friend_name = pick(kNames);
    while (friend_name == hero) friend_name = pick(kNames);
    const std::string_view things = pick(kPluralNouns);
    std::string doc;
    const int sentences = 3 + static_cast<int>(rng_.below(4));
    for (int s = 0; s < sentences; ++s) {
      if (!doc.empty()) doc += ' ';
      doc += sentence(hero, friend_name, things);
    }
    doc += '\n';
    return doc;
  }

  // Documents appended until at least `bytes` bytes.
  std::string text(std::size_t bytes) {
    std::string out;
    out.reserve(bytes + 256);
    while (out.size() < bytes) out += document();
    return out;
  }

 private:
  static constexpr std::array<std::string_view, 10> kNames = {"tom", "anna", "lily", "ben", "sam",
                                                              "mia", "max", "zoe", "leo", "ella"};
  static constexpr std::array<std::string_view, 10> kNouns = {"cat", "dog", "ball", "book", "cup",
                                                              "bird", "tree", "car", "hat", "box"};
  static constexpr std::array<std::string_view, 8> kPluralNouns = {"apples", "books", "stars", "cups",
                                                                   "coins", "shells", "cards", "eggs"};
  static constexpr std::array<std::string_view, 8> kAdjectives = {"red", "big", "small", "blue",
                                                                  "happy", "old", "green", "funny"};
  static constexpr std::array<std::string_view, 6> kVerbs = {"sees", "likes", "finds", "wants", "takes", "draws"};
  static constexpr std::array<std::string_view, 6> kPlaces = {"park", "house", "garden", "school", "river", "shop"};

  template <std::size_t N>
  std::string_view pick(const std::array<std::string_view, N>& words) {
    return words[rng_.below(N)];
  }
  int number(int below) { return static_cast<int>(rng_.below(static_cast<std::uint64_t>(below))); }

  std::string sentence(std::string_view hero, std::string_view friend_name, std::string_view things) {
    const std::string h(hero), f(friend_name), t(things);
    switch (rng_.below(8)) {
      case 0:
        return h + " " + std::string(pick(kVerbs)) + " a " + std::string(pick(kAdjectives)) + " " +
               std::string(pick(kNouns)) + ".";
      case 1: return h + " goes to the " + std::string(pick(kPlaces)) + " with " + f + ".";
      case 2: {  // a sum the model must carry through the sentence
        const int a = 1 + number(9), b = 1 + number(9);
        return h + " has " + std::to_string(a) + " " + t + ". " + h + " gets " + std::to_string(b) +
               " more. now " + h + " has " + std::to_string(a + b) + " " + t + ".";
      }
      case 3: {
        const int a = 2 + number(9), b = 1 + number(a - 1);
        return h + " has " + std::to_string(a) + " " + t + " and gives " + std::to_string(b) + " to " + f +
               ", so " + h + " has " + std::to_string(a - b) + " left.";
      }
      case 4: {
        const int a = number(50), b = number(50);
        return std::to_string(a) + " + " + std::to_string(b) + " = " + std::to_string(a + b) + ".";
      }
      case 5: {
        const int a = number(50), b = number(a + 1);
        return std::to_string(a) + " - " + std::to_string(b) + " = " + std::to_string(a - b) + ".";
      }
      case 6: {
        const int a = number(10), b = number(10);
        return std::to_string(a) + " times " + std::to_string(b) + " is " + std::to_string(a * b) + ".";
      }
      default: {
        const int start = number(20), count = 3 + number(4);
        std::string s = h + " counts";
        for (int i = 0; i < count; ++i) s += (i ? ", " : " ") + std::to_string(start + i);
        return s + ".";
      }
    }
  }

  Rng rng_;
};

// Entropy in nats of the empirical distribution of `tokens` (ids in [0, vocab)): the loss of the best
// model that ignores context, which a trained model must beat.
inline double unigram_entropy(const std::vector<std::int32_t>& tokens, int vocab) {
  std::vector<double> counts(static_cast<std::size_t>(vocab), 0.0);
  for (auto t : tokens) counts[static_cast<std::size_t>(t)] += 1.0;
  double h = 0.0;
  const double n = static_cast<double>(tokens.size());
  for (double c : counts)
    if (c > 0) h -= (c / n) * std::log(c / n);
  return h;
}

}  // namespace lowbit::train
